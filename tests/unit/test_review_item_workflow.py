"""ReviewItem's lifecycle alone: fake `record_review` / `close_review` under the real names on
the time-skipping test server, so orderings that a loaded machine produces only sometimes
(a review still being recorded when the history outgrows its limit) are made on purpose."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities import ids
from activities.payloads import (
    CloseReviewInput,
    PolicyRefPayload,
    RecordReviewInput,
    RecordReviewResult,
    ReviewerGrant,
    ReviewItemInput,
    ReviewReceipt,
    ReviewRulesPayload,
    ReviewStateView,
    ReviewSubmission,
)
from worker.main import WORKFLOWS

HISTORIES = Path(__file__).resolve().parents[1] / "histories"


@dataclass
class FakeReviews:
    """Records every submission; alice's accepted review is held until `release` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    recorded: Counter[str] = field(default_factory=Counter)
    closed: list[tuple[str, str | None]] = field(default_factory=list)

    @activity.defn(name="record_review")
    async def record_review(self, inp: RecordReviewInput) -> RecordReviewResult:
        if inp.accepted and inp.submission.reviewer == "alice":
            self.holding.set()
            await self.release.wait()
        self.recorded[inp.submission.reviewer] += 1
        return RecordReviewResult(accepted=inp.accepted, reason=inp.reason)

    @activity.defn(name="close_review")
    async def close_review(self, inp: CloseReviewInput) -> None:
        self.closed.append((inp.state, inp.label or inp.outcome))


def review_input(history_limit: int) -> ReviewItemInput:
    return ReviewItemInput(
        dataset="unit",
        item_id="ab" * 32,
        job_id="label:unit:j",
        task="sentiment",
        labels=["positive", "negative"],
        sensitivity="normal",
        policy=PolicyRefPayload(id="route_default", version=2, sha256="ab" * 32),
        rule_id="test",
        rules=ReviewRulesPayload(timeout_s=3600),
        reviewers=[ReviewerGrant(id="alice", cleared=True, groups=["primary"])],
        history_limit=history_limit,
    )


async def settled_past(handle: WorkflowHandle[object, object], limit: int) -> int:
    """Wait until the run's history is past `limit` and its last workflow task completed:
    the workflow has seen that its history is too long."""
    for _ in range(400):
        events = [e async for e in handle.fetch_history_events()]
        last = events[-1].event_type
        if len(events) > limit and last == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return len(events)
        await asyncio.sleep(0.05)
    raise AssertionError(f"history stayed at {len(events)} events, last {last}")


async def test_a_review_agreed_while_the_history_outgrows_its_limit_closes_the_item(
    skipping: WorkflowEnvironment,
) -> None:
    """Seen under load: the update was answered `done`, then the run continued as new and the
    new run, not knowing the item was decided, waited until it expired."""
    fakes = FakeReviews()
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    async with Worker(
        skipping.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=[fakes.record_review, fakes.close_review],
    ):
        handle = await skipping.client.start_workflow(
            ids.REVIEW_ITEM_WORKFLOW,
            review_input(history_limit=12),
            id=ids.review_workflow_id("unit", "ab" * 32),
            task_queue=queue,
            result_type=ReviewStateView,
        )
        update = asyncio.create_task(
            handle.execute_update(
                "submit_review",
                ReviewSubmission(reviewer="alice", label="positive"),
                result_type=ReviewReceipt,
            )
        )
        await asyncio.wait_for(fakes.holding.wait(), 30)
        # Refused signals grow the history past the limit while alice is being recorded.
        for _ in range(3):
            await handle.signal("submit_review", ReviewSubmission(reviewer="mallory", label="x"))
        await settled_past(handle, 12)
        fakes.release.set()
        receipt = await asyncio.wait_for(update, 30)
        assert receipt.state == "done" and receipt.label == "positive"
        final = await handle.result()
        history = await handle.fetch_history()
    assert final.state == "done" and final.label == "positive"
    assert fakes.closed == [("done", "positive")]
    assert fakes.recorded == {"alice": 1, "mallory": 3}
    # The run closed rather than carrying a decided item into a new one.
    assert not any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        for e in history.events
    )
    # The recorded history of this path replays (tests/histories keeps one from a real run).
    await Replayer(workflows=list(WORKFLOWS)).replay_workflow(history)


@dataclass
class FakeCatalog(FakeReviews):
    """Says an item is superseded only after `superseded` is set."""

    superseded: bool = False
    asked: int = 0

    @activity.defn(name="review_superseded")
    async def review_superseded(self, workflow_id: str) -> bool:
        self.asked += 1
        return self.superseded


async def test_a_supersede_signal_ends_the_item_only_when_the_catalog_agrees(
    skipping: WorkflowEnvironment,
) -> None:
    fakes = FakeCatalog()
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    async with Worker(
        skipping.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=[fakes.record_review, fakes.close_review, fakes.review_superseded],
    ):
        handle = await skipping.client.start_workflow(
            ids.REVIEW_ITEM_WORKFLOW,
            review_input(history_limit=2_000),
            id=ids.review_workflow_id("unit", "cd" * 32),
            task_queue=queue,
            result_type=ReviewStateView,
        )
        await handle.signal("supersede")  # a hostile one: the catalog says no
        for _ in range(100):
            if fakes.asked:
                break
            await asyncio.sleep(0.05)
        assert fakes.asked == 1
        assert (await handle.query("state", result_type=ReviewStateView)).state == "awaiting"
        fakes.superseded = True
        await handle.signal("supersede")
        final = await handle.result()
        history = await handle.fetch_history()
    assert final.state == "superseded" and final.label is None
    assert fakes.closed == [] and fakes.asked == 2  # the re-score closed it, not the item
    await Replayer(workflows=list(WORKFLOWS)).replay_workflow(history)


async def test_a_validator_refusal_is_a_typed_non_retryable_failure(
    skipping: WorkflowEnvironment,
) -> None:
    """Refused before history as `ReviewRefused`, non-retryable: not `ValueError ...
    retryable: true`, which is what the Web UI showed for a plain ValueError."""
    fakes = FakeReviews()
    fakes.release.set()
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    async with Worker(
        skipping.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=[fakes.record_review, fakes.close_review],
    ):
        handle = await skipping.client.start_workflow(
            ids.REVIEW_ITEM_WORKFLOW,
            review_input(history_limit=2_000),
            id=ids.review_workflow_id("unit", "ef" * 32),
            task_queue=queue,
            result_type=ReviewStateView,
        )
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                "submit_review",
                ReviewSubmission(reviewer="mallory", label="positive"),
                result_type=ReviewReceipt,
            )
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == ids.REVIEW_REFUSED and cause.non_retryable
        assert "mallory" in cause.message
        kinds = [e.event_type async for e in handle.fetch_history_events()]
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED not in kinds
        assert fakes.recorded == {}  # nothing reached the catalog either
        await handle.terminate("test over")
