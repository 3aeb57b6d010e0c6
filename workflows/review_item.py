"""ReviewItem: one item routed to people, id `review:{dataset}:{item}`.

Waits for reviewers (update or signal `submit_review`), closes when enough agree (policy
`review.reviewers_needed`), escalates to another reviewer group on timeout, and ends with the
policy's final outcome if nobody answers. `ReviewState` (awaiting → escalated → done/expired)
is the review queue in `temporal workflow list`.

The update validator refuses bad input before it reaches history; a signal that fails the
same checks is recorded as refused, with its reason, and the workflow keeps waiting. The
roster arrives in the input, so validation is deterministic and needs no I/O.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.review_checks import refusal

with workflow.unsafe.imports_passed_through():
    from activities.payloads import (
        REVIEW_STATE,
        CloseReviewInput,
        RecordReviewInput,
        ReviewItemInput,
        ReviewReceipt,
        ReviewRecord,
        ReviewStateView,
        ReviewSubmission,
    )
    from activities.review import ReviewActivities

SHORT = timedelta(seconds=30)


@workflow.defn(name="ReviewItem")
class ReviewItem:
    @workflow.init
    def __init__(self, inp: ReviewItemInput) -> None:
        self._inp = inp
        self._state = "awaiting"
        self._reviews: list[ReviewRecord] = []
        self._label: str | None = None
        self._signals = 0

    @workflow.run
    async def run(self, inp: ReviewItemInput) -> ReviewStateView:
        decided = await self._wait(inp.rules.timeout_s)
        if not decided and inp.rules.escalate_to:
            self._set_state("escalated")
            decided = await self._wait(inp.rules.escalation_timeout_s)
        # Let in-flight handlers finish recording before the item closes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        if decided:
            winners = [r.reviewer for r in self._reviews if r.accepted and r.label == self._label]
            await self._close("done", label=self._label, reviewers=winners)
        else:
            await self._close("expired", outcome=inp.rules.on_timeout)
        return self.state()

    @workflow.query
    def state(self) -> ReviewStateView:
        inp = self._inp
        return ReviewStateView(
            dataset=inp.dataset,
            item_id=inp.item_id,
            job_id=inp.job_id,
            state=self._state,
            rule_id=inp.rule_id,
            policy=inp.policy,
            labels=inp.labels,
            votes=inp.votes,
            reviews=list(self._reviews),
            label=self._label,
        )

    @workflow.update(name="submit_review")
    async def submit_review(self, sub: ReviewSubmission) -> ReviewReceipt:
        # Another update may have been accepted since this one was validated.
        reason = self._refusal(sub)
        if reason:
            raise ApplicationError(reason, type="ReviewRefused")
        info = workflow.current_update_info()
        key = info.id if info else str(workflow.uuid4())
        return await self._accept(sub, via="update", key=f"{workflow.info().workflow_id}:{key}")

    @submit_review.validator
    def _validate(self, sub: ReviewSubmission) -> None:
        reason = self._refusal(sub)
        if reason:
            raise ValueError(reason)

    @workflow.signal(name="submit_review")
    async def submit_review_signal(self, sub: ReviewSubmission) -> None:
        self._signals += 1
        key = f"{workflow.info().workflow_id}:{workflow.info().run_id}:signal:{self._signals}"
        reason = self._refusal(sub)
        if reason:
            self._reviews.append(
                ReviewRecord(
                    reviewer=sub.reviewer,
                    label=sub.label,
                    note=sub.note,
                    via="signal",
                    accepted=False,
                    reason=reason,
                )
            )
            await self._record(sub, via="signal", key=key, accepted=False, reason=reason)
            return
        await self._accept(sub, via="signal", key=key)

    def _refusal(self, sub: ReviewSubmission) -> str:
        closed = self._label is not None or self._state in ("done", "expired")
        return refusal(self._inp, sub, state=self._state, closed=closed, reviews=self._reviews)

    async def _accept(self, sub: ReviewSubmission, *, via: str, key: str) -> ReviewReceipt:
        # Counted before the activity runs, so a concurrent duplicate is refused.
        self._reviews.append(
            ReviewRecord(
                reviewer=sub.reviewer, label=sub.label, note=sub.note, via=via, accepted=True
            )
        )
        votes = Counter(r.label for r in self._reviews if r.accepted)
        label, count = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if count >= self._inp.rules.reviewers_needed:
            self._label = label
        await self._record(sub, via=via, key=key, accepted=True)
        state = "done" if self._label is not None else self._state
        return ReviewReceipt(accepted=True, state=state, label=self._label)

    async def _record(
        self, sub: ReviewSubmission, *, via: str, key: str, accepted: bool, reason: str = ""
    ) -> None:
        inp = self._inp
        await workflow.execute_activity_method(
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
            ),
            start_to_close_timeout=SHORT,
        )

    async def _wait(self, seconds: int) -> bool:
        try:
            await workflow.wait_condition(
                lambda: self._label is not None, timeout=timedelta(seconds=seconds)
            )
        except TimeoutError:
            return False
        return True

    async def _close(
        self,
        state: str,
        *,
        label: str | None = None,
        reviewers: list[str] | None = None,
        outcome: str | None = None,
    ) -> None:
        inp = self._inp
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
        )
        self._set_state(state)

    def _set_state(self, state: str) -> None:
        self._state = state
        workflow.upsert_search_attributes([REVIEW_STATE.value_set(state)])
