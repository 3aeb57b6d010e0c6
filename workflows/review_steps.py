"""What a ReviewItem does besides deciding (workflow code, deterministic), kept apart so
`review_item.py` reads as the review's lifecycle: the activities it schedules (record a
submission, close the item), decoding a signal, its query view, and continuing as new."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import NoReturn

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.retry import BOOKKEEPING, TRANSIENT
from workflows.review_book import ReviewBook

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.payloads import (
        CloseReviewInput,
        RecordReviewInput,
        RecordReviewResult,
        ReviewCarry,
        ReviewItemInput,
        ReviewStateView,
        ReviewSubmission,
    )
    from activities.review import ReviewActivities

SHORT = timedelta(seconds=30)
MALFORMED_PATCH = "review-records-malformed-signals"


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
            signed=inp.identity is not None,
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


async def record_refusal(
    inp: ReviewItemInput, book: ReviewBook, sub: ReviewSubmission, reason: str, key: str
) -> None:
    """Record a refused signal's submission, if the book keeps it (bounded, cut to size)."""
    kept = book.keep_refusal(sub, reason)
    if kept is None:
        return
    try:
        await record(inp, kept, via="signal", key=key, accepted=False, reason=reason)
    except ActivityError as err:
        workflow.logger.warning("refused signal not recorded: %s", cause(err))


async def superseded(inp: ReviewItemInput) -> bool:
    """Whether the catalog says a re-score superseded this review (see `review_superseded`)."""
    return await workflow.execute_activity_method(
        ReviewActivities.review_superseded,
        workflow.info().workflow_id,
        start_to_close_timeout=SHORT,
        retry_policy=TRANSIENT,
    )


async def finish(
    inp: ReviewItemInput,
    label: str | None,
    reviewers: list[str],
    set_state: Callable[[str], None],
) -> None:
    """Close the item: `done` with the agreed label, or `expired` with the policy's outcome.
    Terminal: if the close cannot be recorded after every retry, the item says so in the
    queue (ReviewState=errored) and fails, rather than stay awaiting forever."""
    state = "done" if label is not None else "expired"
    try:
        if label is not None:
            await close(inp, state, label=label, reviewers=reviewers)
        else:
            await close(inp, state, outcome=inp.rules.on_timeout)
    except ActivityError as err:
        set_state("errored")
        raise ApplicationError(
            f"review of item {inp.item_id[:12]} could not be closed: {cause(err)}",
            type=ids.REVIEW_ERRORED,
            non_retryable=True,
        ) from err
    set_state(state)


def cause(err: ActivityError) -> str:
    """What went wrong in an activity, as its own message."""
    failure = err.cause or err
    return getattr(failure, "message", None) or str(failure)


def decode(raw: RawValue) -> tuple[ReviewSubmission, str] | None:
    """A signal's submission and, when it does not decode, why (as released: None, dropped).
    Decoded here, not by the SDK, which drops what does not decode, leaving no trace."""
    try:
        return workflow.payload_converter().from_payload(raw.payload, ReviewSubmission), ""
    except Exception as err:
        if not workflow.patched(MALFORMED_PATCH):
            return None
        malformed = f"malformed submission: {getattr(err, 'message', err)}"[:300]
        return ReviewSubmission(reviewer="?", label="?"), malformed


def view(inp: ReviewItemInput, state: str, book: ReviewBook, label: str | None) -> ReviewStateView:
    return ReviewStateView(
        dataset=inp.dataset,
        item_id=inp.item_id,
        job_id=inp.job_id,
        state=state,
        rule_id=inp.rule_id,
        policy=inp.policy,
        labels=inp.labels,
        votes=inp.votes,
        reviews=list(book.reviews),
        label=label,
        refused_unkept=book.refused_unkept,
    )


def history_too_long(limit: int) -> bool:
    info = workflow.info()
    return info.get_current_history_length() > limit or info.is_continue_as_new_suggested()


def continue_as_new(
    inp: ReviewItemInput, state: str, book: ReviewBook, deadline: datetime | None
) -> NoReturn:
    """Carry the reviews so far and the phase's deadline into a fresh run (call it once the
    handlers have finished and no label is agreed)."""
    assert deadline is not None
    carry = ReviewCarry(
        state=state,
        reviews=list(book.reviews),
        refused_unkept=book.refused_unkept,
        deadline=deadline.isoformat(),
    )
    workflow.continue_as_new(replace(inp, carry=carry))
