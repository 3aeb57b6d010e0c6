"""LabelDataset's orchestration alone: fake activities registered under the real names on the
time-skipping test server (as Temporal's samples test workflows), so the window, continue-as-
new, the review hand-off and both terminal paths are checked in seconds with no catalog, S3
or agents. The real activities are exercised by the integration tier."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import ids
from activities.payloads import (
    ChunkInput,
    ChunkResult,
    FinishJobInput,
    IngestInput,
    IngestResult,
    JobPlan,
    LabelDatasetInput,
    LabelDatasetResult,
    OpenReviewsInput,
    OutcomeCounts,
    PolicyRefPayload,
    PrepareJobInput,
    SnapshotInput,
    SnapshotRef,
)
from worker.main import WORKFLOWS

POLICY = PolicyRefPayload(id="route_default", version=2, sha256="ab" * 32)


@dataclass
class FakeActivities:
    """The five activities a job runs, with the calls they saw; `items` items ingested, every
    third item routed to review, and `chunk_failures` scripted failures of label_chunk."""

    items: int = 10
    chunk_failures: list[BaseException] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    chunks: list[int] = field(default_factory=list)
    reviewed_chunks: list[int] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    @activity.defn(name="prepare_job")
    async def prepare_job(self, inp: PrepareJobInput) -> JobPlan:
        self.calls["prepare_job"] += 1
        return JobPlan(policy=POLICY, agents=["lexicon"])

    @activity.defn(name="ingest")
    async def ingest(self, inp: IngestInput) -> IngestResult:
        self.calls["ingest"] += 1
        return IngestResult(items=self.items, duplicates=1, quarantined=2)

    @activity.defn(name="label_chunk")
    async def label_chunk(self, inp: ChunkInput) -> ChunkResult:
        self.calls["label_chunk"] += 1
        if self.chunk_failures:
            raise self.chunk_failures.pop(0)
        self.chunks.append(inp.chunk)
        review = sum(1 for ordinal in range(inp.start, inp.end) if ordinal % 3 == 0)
        counts = OutcomeCounts(auto_accept=inp.end - inp.start - review, human_review=review)
        return ChunkResult(chunk=inp.chunk, counts=counts)

    @activity.defn(name="open_reviews")
    async def open_reviews(self, inp: OpenReviewsInput) -> int:
        self.reviewed_chunks.append(inp.chunk)
        return 1

    @activity.defn(name="snapshot")
    async def snapshot(self, inp: SnapshotInput) -> SnapshotRef:
        self.calls["snapshot"] += 1
        return SnapshotRef(
            dataset=inp.dataset,
            version=1,
            s3_key=f"datasets/{inp.dataset}/v1.jsonl",
            s3_version_id="v",
            manifest_version_id="m",
            item_count=self.items,
            content_sha256="cd" * 32,
        )

    @activity.defn(name="finish_job")
    async def finish_job(self, inp: FinishJobInput) -> None:
        self.finished.append(inp.status)

    @property
    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare_job,
            self.ingest,
            self.label_chunk,
            self.open_reviews,
            self.snapshot,
            self.finish_job,
        ]


async def run_job(
    env: WorkflowEnvironment, fakes: FakeActivities, **options: Any
) -> LabelDatasetResult:
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    inp = replace(LabelDatasetInput(dataset="unit", source="/data/x.jsonl", task="t"), **options)
    async with Worker(
        env.client, task_queue=queue, workflows=list(WORKFLOWS), activities=fakes.all
    ):
        return await env.client.execute_workflow(
            ids.LABEL_DATASET_WORKFLOW,
            inp,
            id=ids.label_workflow_id("unit", uuid.uuid4().hex[:8]),
            task_queue=queue,
            result_type=LabelDatasetResult,
        )


async def test_every_chunk_is_labeled_once_and_reviews_open_only_where_routed(
    skipping: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(items=10)
    result = await run_job(skipping, fakes, chunk_size=3, parallelism=2)
    assert sorted(fakes.chunks) == [0, 1, 2, 3]  # 10 items in chunks of 3, each once
    # Items 0, 3, 6, 9 go to review: one in each chunk.
    assert sorted(fakes.reviewed_chunks) == [0, 1, 2, 3]
    assert result.counts == OutcomeCounts(auto_accept=6, human_review=4)
    assert (result.items, result.duplicates, result.quarantined) == (10, 1, 2)
    assert result.policy == POLICY and result.snapshot.item_count == 10
    assert fakes.calls["snapshot"] == 1 and fakes.finished == ["completed"]


async def test_a_chunk_without_reviews_opens_none(skipping: WorkflowEnvironment) -> None:
    fakes = FakeActivities(items=5)
    await run_job(skipping, fakes, chunk_size=1, parallelism=4)
    assert sorted(fakes.reviewed_chunks) == [0, 3]  # only items 0 and 3 were routed to people


async def test_continue_as_new_carries_progress_without_relabeling(
    skipping: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(items=10)
    result = await run_job(skipping, fakes, chunk_size=2, parallelism=2, max_chunks_per_run=2)
    assert sorted(fakes.chunks) == [0, 1, 2, 3, 4]
    assert fakes.calls["prepare_job"] == 1 and fakes.calls["ingest"] == 1  # resumed, not redone
    assert result.counts.total == 10


async def test_transient_failures_are_retried(skipping: WorkflowEnvironment) -> None:
    fakes = FakeActivities(items=3, chunk_failures=[ConnectionError("db restarting")] * 2)
    result = await run_job(skipping, fakes, chunk_size=3)
    assert fakes.calls["label_chunk"] == 3 and fakes.chunks == [0]
    assert result.counts.total == 3 and fakes.finished == ["completed"]


async def test_a_deterministic_failure_ends_the_job_at_once_as_failed(
    skipping: WorkflowEnvironment,
) -> None:
    changed = ApplicationError("changed on disk", type=ids.POLICY_CHANGED, non_retryable=True)
    fakes = FakeActivities(items=3, chunk_failures=[changed])
    with pytest.raises(WorkflowFailureError) as failure:
        await run_job(skipping, fakes, chunk_size=3)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == ids.POLICY_CHANGED
    assert fakes.calls["label_chunk"] == 1  # never retried
    assert fakes.finished == ["failed"] and fakes.calls["snapshot"] == 0


async def test_a_deterministic_type_is_never_retried_even_unmarked(
    skipping: WorkflowEnvironment,
) -> None:
    """The workflow's retry policies name the deterministic types: a raiser that forgets
    `non_retryable` still ends the job on the first attempt."""
    unmarked = ApplicationError("NUL byte in a row", type=ids.BAD_DATA)
    fakes = FakeActivities(items=3, chunk_failures=[unmarked])
    with pytest.raises(WorkflowFailureError) as failure:
        await run_job(skipping, fakes, chunk_size=3)
    assert isinstance(failure.value.cause, ApplicationError)
    assert failure.value.cause.type == ids.BAD_DATA
    assert fakes.calls["label_chunk"] == 1 and fakes.finished == ["failed"]
