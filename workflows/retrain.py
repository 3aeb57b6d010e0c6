"""Retrain: one long-lived workflow per task, id `retrain:{task}`.

`labels_added` (no payload that matters: one human label each, sent when a review closes on
a task with `learn.every`) counts new human labels; after `every` of them, or on `retrain`
(`labelfabric agent retrain`), it runs one `retrain_agents` round: each trainable agent
retrained on its seed plus the accepted human labels, promoted only if the task's gate policy
passes. After a promotion it re-scores the task's backlog (`rescore_backlog`): items the
active policy now auto-accepts are labeled and their reviews superseded. Requests that
arrive during a round coalesce into one more. It continues as new well before Temporal's
per-run limits, carrying the count and any request not yet served.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities import ids
    from activities.learning import LearningActivities
    from activities.payloads import (
        RescoreInput,
        RescoreResult,
        RetrainInput,
        RetrainRequest,
        RetrainResult,
        RetrainStatus,
    )
    from activities.rescore import RescoreActivities

from workflows.retry import TRANSIENT

MAX_SIGNALS_PER_RUN = 2_000


@workflow.defn(name=ids.RETRAIN_WORKFLOW)
class Retrain:
    def __init__(self) -> None:
        self._pending = 0
        self._requested = False
        self._signals = 0
        self._rounds = 0
        self._every = 0
        self._task = ""
        self._running = False
        self._last: RetrainResult | None = None

    @workflow.signal(name="labels_added")
    def labels_added(self) -> None:
        self._pending += 1
        self._signals += 1

    @workflow.signal(name="retrain")
    def retrain(self) -> None:
        self._requested = True
        self._signals += 1

    @workflow.query
    def status(self) -> RetrainStatus:
        return RetrainStatus(
            task=self._task,
            rounds=self._rounds,
            pending=self._pending,
            every=self._every,
            running=self._running,
            last=self._last,
        )

    def _due(self) -> bool:
        return self._requested or (self._every > 0 and self._pending >= self._every)

    async def _rescore(self, inp: RetrainInput, reason: str) -> RescoreResult:
        """After a promotion: the backlog through the new agents, once per round."""
        return await workflow.execute_activity_method(
            RescoreActivities.rescore_backlog,
            RescoreInput(
                task=inp.task,
                key=f"{workflow.info().run_id[:8]}-{self._rounds + 1}",
                reason=f"agents promoted, {reason}",
            ),
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=TRANSIENT,
        )

    @workflow.run
    async def run(self, inp: RetrainInput) -> None:
        self._task, self._every = inp.task, max(0, inp.every)
        self._pending += max(0, inp.pending)
        self._requested = self._requested or inp.requested
        self._rounds = inp.rounds
        rounds = 0
        while rounds < inp.max_rounds_per_run and self._signals < MAX_SIGNALS_PER_RUN:
            await workflow.wait_condition(self._due)
            reason = "asked" if self._requested else f"{self._pending} new human labels"
            self._requested, self._pending = False, 0
            rounds += 1
            self._running = True
            try:
                self._last = await workflow.execute_activity_method(
                    LearningActivities.retrain_agents,
                    RetrainRequest(task=inp.task, reason=reason),
                    start_to_close_timeout=timedelta(hours=1),
                    heartbeat_timeout=timedelta(minutes=5),
                    retry_policy=TRANSIENT,
                )
                if any(a.state == "promoted" for a in self._last.agents):
                    self._last = replace(self._last, rescore=await self._rescore(inp, reason))
            except ActivityError as err:
                # Nothing was promoted by the failed round (or the re-score failed after its
                # retries; the promotion stands); the next request tries again.
                message = getattr(err.cause, "message", str(err.cause or err))
                workflow.logger.error("retrain of %s failed: %s", inp.task, message)
                last = self._last or RetrainResult(task=inp.task)
                self._last = replace(last, note=f"round failed: {message}")
            self._running = False
            self._rounds += 1
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            replace(inp, pending=self._pending, requested=self._requested, rounds=self._rounds)
        )
