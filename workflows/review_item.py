"""ReviewItem: one item routed to people, id `review:{dataset}:{item}`.

Waits for reviewers (update or signal `submit_review`), closes when enough agree (policy
`review.reviewers_needed`), escalates to another reviewer group on timeout, and ends with the
policy's final outcome if nobody answers. `ReviewState` (awaiting → escalated → done/expired,
or errored when the close cannot be recorded) is the review queue in `temporal workflow list`.
Inputs are bounded and claims verified (`review_checks.py`); a long history continues as new
(`review_steps.py`); rotated identity keys are re-read (`review_identity.py`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import review_steps as steps
from workflows.review_book import ReviewBook
from workflows.review_checks import refusal
from workflows.review_identity import refreshed

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.payloads import (
        REVIEW_STATE,
        ReviewItemInput,
        ReviewReceipt,
        ReviewStateView,
        ReviewSubmission,
    )

CAN_PATCH = "review-continue-as-new"
CONFIRM_PATCH = "review-counts-once-recorded"
CLOSE_FIRST_PATCH = "review-closes-before-continue-as-new"


@workflow.defn(name=ids.REVIEW_ITEM_WORKFLOW)
class ReviewItem:
    @workflow.init
    def __init__(self, inp: ReviewItemInput) -> None:
        self._inp = inp
        carry = inp.carry
        self._state = carry.state if carry else "awaiting"
        self._book = ReviewBook(
            needed=inp.rules.reviewers_needed,
            reviews=list(carry.reviews) if carry else [],
            refused_unkept=carry.refused_unkept if carry else 0,
        )
        self._deadline = datetime.fromisoformat(carry.deadline) if carry else None
        self._label: str | None = None
        self._signals = 0
        self._can_refused = False  # replaying a history from before continue-as-new existed
        self._supersede_asked = False  # a `supersede` signal not yet checked
        self._superseded = False  # a re-score auto-accepted the item: no review needed
        self._keys_refreshing = False  # an `identity_keys` signal is being acted on

    @workflow.run
    async def run(self, inp: ReviewItemInput) -> ReviewStateView:
        while True:
            decided = False
            if self._state == "awaiting":
                decided = await self._wait(inp.rules.timeout_s)
                if not decided and inp.rules.escalate_to and not self._superseded:
                    self._set_state("escalated")
                    self._deadline = None
            if self._state == "escalated" and not self._superseded:
                decided = await self._wait(inp.rules.escalation_timeout_s)
            # Let in-flight handlers finish recording before the item closes.
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._superseded:  # a re-score auto-accepted it: nothing to close here
                self._set_state(ids.SUPERSEDED)
                return self.state()
            # A review the catalog refused (roster revoked) after waking us reopens the wait.
            if not decided or self._label is not None:
                break
        reviewers = self._book.winners(self._label) if decided else []
        await steps.finish(inp, self._label if decided else None, reviewers, self._set_state)
        return self.state()

    @workflow.query
    def state(self) -> ReviewStateView:
        return steps.view(self._inp, self._state, self._book, self._label)

    @workflow.update(name="submit_review")
    async def submit_review(self, sub: ReviewSubmission) -> ReviewReceipt:
        self._check(sub)  # another update may have been accepted since this one's validation
        info = workflow.current_update_info()
        key = info.id if info else str(workflow.uuid4())
        return await self._accept(sub, via="update", key=f"{workflow.info().workflow_id}:{key}")

    @submit_review.validator
    def _validate(self, sub: ReviewSubmission) -> None:
        self._check(sub, non_retryable=True)  # refused before history, typed, not retried

    @workflow.signal(name="supersede")
    def supersede(self) -> None:
        """A re-score auto-accepted the item; believed only once the catalog says so."""
        self._supersede_asked = True

    @workflow.signal(name="identity_keys")
    async def identity_keys(self) -> None:
        """The reviewer-identity keys were rotated (a flood coalesces into one refresh)."""
        if self._inp.identity is None or self._keys_refreshing:
            return
        self._keys_refreshing = True
        self._inp = await refreshed(self._inp)
        self._keys_refreshing = False

    @workflow.signal(name="submit_review")
    async def submit_review_signal(self, raw: RawValue) -> None:
        decoded = steps.decode(raw)
        if decoded is None:
            return  # as released: dropped
        sub, malformed = decoded
        self._signals += 1
        key = f"{workflow.info().workflow_id}:{workflow.info().run_id}:signal:{self._signals}"
        reason = malformed or self._refusal(sub)
        if not reason:
            try:
                await self._accept(sub, via="signal", key=key)
            except ApplicationError as err:
                workflow.logger.warning("signal review not taken: %s", err.message)
            return
        await steps.record_refusal(self._inp, self._book, sub, reason, key)

    def _check(self, sub: ReviewSubmission, *, non_retryable: bool = False) -> None:
        if reason := self._refusal(sub):
            raise ApplicationError(reason, type=ids.REVIEW_REFUSED, non_retryable=non_retryable)

    def _refusal(self, sub: ReviewSubmission) -> str:
        closed = self._label is not None or self._superseded
        closed = closed or self._state in ("done", "expired", "errored", ids.SUPERSEDED)
        reviews, now = self._book.reviews, workflow.now()
        return refusal(self._inp, sub, state=self._state, closed=closed, reviews=reviews, now=now)

    async def _accept(self, sub: ReviewSubmission, *, via: str, key: str) -> ReviewReceipt:
        book = self._book
        confirm_first = workflow.patched(CONFIRM_PATCH)
        record = book.list_accepted(sub, via, confirmed=not confirm_first)
        if not confirm_first:  # as released: counted at once (histories from before the patch)
            self._label = book.agreed()
        try:
            result = await steps.record(self._inp, sub, via=via, key=key, accepted=True)
        except ActivityError as err:
            book.withdraw(record, "not recorded")
            self._label = book.agreed()
            raise ApplicationError(
                f"the review could not be recorded: {steps.cause(err)}",
                type=ids.REVIEW_NOT_RECORDED,
            ) from err
        if result is not None and not result.accepted:
            book.withdraw(record, result.reason)
            self._label = book.agreed()
            raise ApplicationError(result.reason, type=ids.REVIEW_REFUSED)
        book.confirm(record)
        if self._label is None:
            self._label = book.agreed()
        state = "done" if self._label is not None else self._state
        return ReviewReceipt(accepted=True, state=state, label=self._label)

    async def _wait(self, seconds: int) -> bool:
        """Wait for an agreed label until this phase's deadline (continuing as new if long)."""
        if self._deadline is None:
            self._deadline = workflow.now() + timedelta(seconds=seconds)
        while self._label is None:
            left = (self._deadline - workflow.now()).total_seconds()
            if left <= 0:
                return False
            try:
                await workflow.wait_condition(
                    lambda: self._label is not None or self._too_long() or self._supersede_asked,
                    timeout=timedelta(seconds=left),
                )
            except TimeoutError:
                return self._label is not None
            if self._supersede_asked and self._label is None:
                self._supersede_asked = False
                self._superseded = await steps.superseded(self._inp)
                if self._superseded:
                    return False
            if self._label is None and self._too_long():
                if not workflow.patched(CAN_PATCH):
                    self._can_refused = True
                    continue
                await workflow.wait_condition(workflow.all_handlers_finished)
                # A review agreed while the handlers finished closes this run: carried into
                # a new one, the item would wait for a label it already has, and expire.
                if self._label is not None and workflow.patched(CLOSE_FIRST_PATCH):
                    break
                steps.continue_as_new(self._inp, self._state, self._book, self._deadline)
        return True

    def _too_long(self) -> bool:
        return not self._can_refused and steps.history_too_long(self._inp.history_limit)

    def _set_state(self, state: str) -> None:
        self._state = state
        workflow.upsert_search_attributes([REVIEW_STATE.value_set(state)])
