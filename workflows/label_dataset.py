"""LabelDataset: one labeling job, id `label:{dataset}:{job}`.

prepare (resolve task, agents, policy version + sha256, source) → ingest → label_chunk over
chunks with a sliding window of `parallelism` activities → snapshot → finish.

Deterministic orchestration only: every read of the world happens in an activity. Payloads
carry chunk ranges and versions, never item text, so an auto-accepted item adds no history
of its own; a long job continues as new before its history grows large.

It names itself in visibility, whoever started it (a raw `temporal workflow start`, a watcher's
child, a drift relabel): search attributes `Dataset` and `Job` (and, for one release, the
released `LabelDataset` and `LabelJob`), and a memo `summary` (`JobSummary`) at its start,
when labeling (re)starts and at its end. Both behind patches: histories from before replay.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.attributes import name_job
from workflows.chunk_step import label_chunk
from workflows.retry import BOOKKEEPING, TRANSIENT

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.jobs import JobActivities
    from activities.payloads import (
        ChunkResult,
        FinishJobInput,
        IngestInput,
        JobSummary,
        LabelDatasetInput,
        LabelDatasetResult,
        OutcomeCounts,
        PrepareJobInput,
        Progress,
        ResumeState,
        SnapshotInput,
    )
    from activities.snapshot import SnapshotActivities

ATTRIBUTES_PATCH = "job-search-attributes-dataset-job"
SUMMARY_PATCH = "job-summary-memo"


@workflow.defn(name=ids.LABEL_DATASET_WORKFLOW)
class LabelDataset:
    def __init__(self) -> None:
        self._progress = Progress(phase="preparing")
        self._summary: JobSummary | None = None  # None: a run from before the memo existed

    @workflow.query
    def progress(self) -> Progress:
        return self._progress

    @workflow.run
    async def run(self, inp: LabelDatasetInput) -> LabelDatasetResult:
        job_id = workflow.info().workflow_id
        if workflow.patched(SUMMARY_PATCH):
            self._summary = JobSummary(
                dataset=inp.dataset, task=inp.task, policy=inp.policy, reason=inp.reason,
                phase="preparing",
            )  # fmt: skip
        try:
            return await self._run(job_id, inp)
        except ActivityError as err:
            await self._finish(job_id, "failed")
            self._summarize(phase="failed")
            cause = err.cause
            if isinstance(cause, ApplicationError):
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from err
            raise

    async def _run(self, job_id: str, inp: LabelDatasetInput) -> LabelDatasetResult:
        if min(inp.chunk_size, inp.parallelism, inp.max_chunks_per_run) < 1:
            raise ApplicationError(
                "chunk_size, parallelism and max_chunks_per_run must be >= 1", type=ids.BAD_INPUT
            )
        state = inp.resume or await self._start(job_id, inp)
        if inp.resume is not None:
            name_job(inp.dataset, job_id, ATTRIBUTES_PATCH, first_run=False)
        items = state.ingest.items
        chunks_total = -(-items // inp.chunk_size)
        counts, next_chunk = state.counts, state.next_chunk
        policy = state.plan.policy
        self._summarize(
            phase="labeling", policy=f"{policy.id}@{policy.version}", items=items,
            quarantined=state.ingest.quarantined, duplicates=state.ingest.duplicates,
            chunks_total=chunks_total, chunks_done=next_chunk, counts=counts,
        )  # fmt: skip
        self._progress = Progress(
            phase="labeling",
            items=items,
            quarantined=state.ingest.quarantined,
            duplicates=state.ingest.duplicates,
            chunks_total=chunks_total,
            chunks_done=next_chunk,
            counts=counts,
        )

        in_flight: set[asyncio.Task[ChunkResult]] = set()
        started_this_run = 0
        while next_chunk < chunks_total or in_flight:
            while (
                len(in_flight) < inp.parallelism
                and next_chunk < chunks_total
                and started_this_run < inp.max_chunks_per_run
            ):
                in_flight.add(asyncio.ensure_future(label_chunk(job_id, inp, state, next_chunk)))
                next_chunk += 1
                started_this_run += 1
            done, pending = await workflow.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            in_flight = set(pending)
            for task in done:
                counts = counts + task.result().counts
            self._progress = replace(
                self._progress, chunks_done=self._progress.chunks_done + len(done), counts=counts
            )
            if (
                not in_flight
                and started_this_run >= inp.max_chunks_per_run
                and next_chunk < chunks_total
            ):
                workflow.continue_as_new(
                    replace(inp, resume=replace(state, next_chunk=next_chunk, counts=counts))
                )

        self._progress = replace(self._progress, phase="snapshotting")
        snapshot = await workflow.execute_activity_method(
            SnapshotActivities.snapshot,
            SnapshotInput(job_id=job_id, dataset=inp.dataset),
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=TRANSIENT,
        )
        await self._finish(job_id, "completed")
        self._progress = replace(self._progress, phase="done")
        self._summarize(
            phase="done", chunks_done=chunks_total, counts=counts,
            snapshot=f"{snapshot.dataset}@{snapshot.version}",
        )  # fmt: skip
        await workflow.wait_condition(workflow.all_handlers_finished)
        return LabelDatasetResult(
            job_id=job_id,
            dataset=inp.dataset,
            items=items,
            duplicates=state.ingest.duplicates,
            quarantined=state.ingest.quarantined,
            counts=counts,
            policy=state.plan.policy,
            snapshot=snapshot,
        )

    async def _start(self, job_id: str, inp: LabelDatasetInput) -> ResumeState:
        name_job(inp.dataset, job_id, ATTRIBUTES_PATCH, first_run=True)
        self._summarize(phase="preparing")
        plan = await workflow.execute_activity_method(
            JobActivities.prepare_job,
            PrepareJobInput(
                job_id=job_id,
                dataset=inp.dataset,
                source=inp.source,
                task=inp.task,
                policy=inp.policy,
                agents=inp.agents,
                reason=inp.reason,
            ),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=TRANSIENT,
        )
        self._progress = Progress(phase="ingesting")
        ingest = await workflow.execute_activity_method(
            JobActivities.ingest,
            IngestInput(job_id=job_id, dataset=inp.dataset, source=inp.source, task=inp.task),
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=TRANSIENT,
        )
        return ResumeState(plan=plan, ingest=ingest, next_chunk=0, counts=OutcomeCounts())

    def _summarize(self, **changes: Any) -> None:
        """Upsert the memo `summary` with `changes` (a run from before the memo: nothing)."""
        if self._summary is not None:
            self._summary = replace(self._summary, **changes)
            workflow.upsert_memo({ids.JOB_SUMMARY_MEMO: self._summary})

    async def _finish(self, job_id: str, status: str) -> None:
        await workflow.execute_activity_method(
            JobActivities.finish_job,
            FinishJobInput(job_id=job_id, status=status),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=BOOKKEEPING,
        )
