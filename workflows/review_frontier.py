"""ReviewFrontier: one long-lived workflow per dataset, id `frontier:{dataset}`.

A routed item waits in the catalog (`review_task`, state `queued`, with its priority) rather
than opening a ReviewItem workflow at once; this workflow keeps at most the routing policy's
`review.open_limit` of them open. It is woken (`wake`, no payload) when a job queues items and
when a review closes, and each time runs one `top_up_reviews` activity: open the highest
priority waiting items that fit. Wake-ups that arrive while it runs coalesce into one more,
so a flood of signals costs one top-up. A top-up that fails after its retries is tried
again a few minutes later, and it continues as new well before Temporal's per-run limits.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.payloads import FrontierInput, FrontierStatus, TopUpInput
    from activities.review import ReviewActivities

from workflows.attributes import name_dataset
from workflows.retry import TRANSIENT

MAX_SIGNALS_PER_RUN = 2_000
RETRY_AFTER = timedelta(minutes=5)


@workflow.defn(name=ids.FRONTIER_WORKFLOW)
class ReviewFrontier:
    def __init__(self) -> None:
        self._pending = False
        self._signals = 0
        self._status: FrontierStatus | None = None

    @workflow.signal(name="wake")
    def wake(self) -> None:
        self._pending = True
        self._signals += 1

    @workflow.query
    def status(self) -> FrontierStatus | None:
        """What the last top-up left (open, waiting, limit); None before the first."""
        return self._status

    @workflow.run
    async def run(self, inp: FrontierInput) -> None:
        name_dataset(inp.dataset)
        self._pending = self._pending or inp.pending
        top_ups = 0
        failed = False
        while top_ups < inp.max_top_ups_per_run and self._signals < MAX_SIGNALS_PER_RUN:
            if failed:
                # Try again later even if nothing wakes us: the items are still waiting.
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self._pending, timeout=RETRY_AFTER)
            else:
                await workflow.wait_condition(lambda: self._pending)
            self._pending = False
            top_ups += 1
            try:
                self._status = await workflow.execute_activity_method(
                    ReviewActivities.top_up_reviews,
                    TopUpInput(dataset=inp.dataset),
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=timedelta(minutes=1),
                    retry_policy=TRANSIENT,
                )
                failed = False
            except ActivityError as err:
                workflow.logger.error("review top-up of %s failed: %s", inp.dataset, err.cause)
                failed = True
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(replace(inp, pending=self._pending or failed))
