"""One chunk of a LabelDataset job: label and route it, then open reviews for the items the
policy sent to people. Workflow code (deterministic), shared by LabelDataset's window."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.labeling import LabelingActivities
    from activities.payloads import (
        ChunkInput,
        ChunkResult,
        LabelDatasetInput,
        OpenReviewsInput,
        ResumeState,
    )
    from activities.review import ReviewActivities

from workflows.retry import TRANSIENT


async def label_chunk(
    job_id: str, inp: LabelDatasetInput, state: ResumeState, chunk: int
) -> ChunkResult:
    start = chunk * inp.chunk_size
    end = min(start + inp.chunk_size, state.ingest.items)
    result = await workflow.execute_activity_method(
        LabelingActivities.label_chunk,
        ChunkInput(
            job_id=job_id,
            dataset=inp.dataset,
            task=inp.task,
            agents=state.plan.agents,
            policy=state.plan.policy,
            chunk=chunk,
            start=start,
            end=end,
        ),
        start_to_close_timeout=timedelta(minutes=10),
        heartbeat_timeout=timedelta(seconds=inp.chunk_heartbeat_timeout_s),
        retry_policy=TRANSIENT,
    )
    # Released after the first jobs ran: their histories have no open_reviews.
    if result.counts.human_review and workflow.patched("open-reviews"):
        await workflow.execute_activity_method(
            ReviewActivities.open_reviews,
            OpenReviewsInput(
                job_id=job_id,
                dataset=inp.dataset,
                task=inp.task,
                policy=state.plan.policy,
                chunk=chunk,
                start=start,
                end=end,
            ),
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=TRANSIENT,
        )
    return result
