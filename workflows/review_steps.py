"""The activities a ReviewItem schedules (record a submission, close the item): workflow code
(deterministic), kept apart so `review_item.py` reads as the review's lifecycle."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.retry import BOOKKEEPING, TRANSIENT

with workflow.unsafe.imports_passed_through():
    from activities.payloads import (
        CloseReviewInput,
        RecordReviewInput,
        RecordReviewResult,
        ReviewItemInput,
        ReviewSubmission,
    )
    from activities.review import ReviewActivities

SHORT = timedelta(seconds=30)


async def record(
    inp: ReviewItemInput,
    sub: ReviewSubmission,
    *,
    via: str,
    key: str,
    accepted: bool,
    reason: str = "",
) -> RecordReviewResult | None:
    """Record a submission; the catalog may still refuse it (roster revoked)."""
    return await workflow.execute_activity_method(
        ReviewActivities.record_review,
        RecordReviewInput(
            key=key,
            workflow_id=workflow.info().workflow_id,
            dataset=inp.dataset,
            item_id=inp.item_id,
            job_id=inp.job_id,
            submission=sub,
            via=via,
            accepted=accepted,
            reason=reason,
            gold_label=inp.gold_label,
            task=inp.task,
            sensitivity=inp.sensitivity,
        ),
        start_to_close_timeout=SHORT,
        retry_policy=TRANSIENT,
    )


async def close(
    inp: ReviewItemInput,
    state: str,
    *,
    label: str | None = None,
    reviewers: list[str] | None = None,
    outcome: str | None = None,
) -> None:
    """Write the agreed label (or the expiry outcome) and close the item's review task."""
    await workflow.execute_activity_method(
        ReviewActivities.close_review,
        CloseReviewInput(
            workflow_id=workflow.info().workflow_id,
            dataset=inp.dataset,
            item_id=inp.item_id,
            job_id=inp.job_id,
            state=state,
            label=label,
            reviewers=reviewers or [],
            outcome=outcome,
        ),
        start_to_close_timeout=SHORT,
        retry_policy=BOOKKEEPING,
    )


def cause(err: ActivityError) -> str:
    """What went wrong in an activity, as its own message."""
    failure = err.cause or err
    return getattr(failure, "message", None) or str(failure)
