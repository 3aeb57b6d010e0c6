"""ReviewFrontier alone, with a fake `top_up_reviews` on the time-skipping test server: wake-ups
coalesce (a flood costs one top-up more, not one each), a wake with a hostile payload is
harmless, a failed top-up is tried again without a wake, and it continues as new."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import ids
from activities.payloads import FrontierInput, FrontierStatus, TopUpInput
from worker.main import WORKFLOWS


@dataclass
class FakeTopUp:
    """Counts top-ups; each waits for `gate` when `hold` is set; fails `failures` times."""

    calls: int = 0
    hold: bool = False
    failures: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @activity.defn(name="top_up_reviews")
    async def top_up_reviews(self, inp: TopUpInput) -> FrontierStatus:
        self.calls += 1
        self.started.set()
        if self.hold:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ApplicationError("catalog down", non_retryable=True)
        return FrontierStatus(dataset=inp.dataset, open=2, queued=5, opened=1, open_limit=2)


@asynccontextmanager
async def frontier(
    env: WorkflowEnvironment, fake: FakeTopUp, max_top_ups_per_run: int = 500
) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client, task_queue=queue, workflows=list(WORKFLOWS), activities=[fake.top_up_reviews]
    ):
        yield await env.client.start_workflow(
            ids.FRONTIER_WORKFLOW,
            FrontierInput(dataset="unit", max_top_ups_per_run=max_top_ups_per_run),
            id=ids.frontier_workflow_id(f"unit{uuid.uuid4().hex[:6]}"),
            task_queue=queue,
            start_signal="wake",
        )


async def wait_calls(fake: FakeTopUp, n: int) -> None:
    for _ in range(200):
        if fake.calls >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{fake.calls} top-ups, expected {n}")


async def test_a_flood_of_wake_ups_costs_one_more_top_up(skipping: WorkflowEnvironment) -> None:
    fake = FakeTopUp(hold=True)
    async with frontier(skipping, fake) as handle:
        await asyncio.wait_for(fake.started.wait(), 30)
        for _ in range(50):
            await handle.signal("wake")
        # A caller's payload is no part of a wake-up: dropped by the SDK, never a failure.
        await handle.signal("wake", {"open_limit": 10**9})
        fake.gate.set()
        await wait_calls(fake, 2)
        status = await handle.query("status", result_type=FrontierStatus)
        await asyncio.sleep(0.5)
        assert fake.calls == 2
        assert status is not None and status.open_limit == 2
        desc = await handle.describe()
        assert desc.status is not None and desc.status.name == "RUNNING"


async def test_a_failed_top_up_is_tried_again_without_a_wake(
    skipping: WorkflowEnvironment,
) -> None:
    fake = FakeTopUp(failures=1)
    async with frontier(skipping, fake) as handle:
        await wait_calls(fake, 1)
        # Nothing wakes it: the retry comes from its own timer (skipped ahead here).
        await skipping.sleep(6 * 60)
        await wait_calls(fake, 2)
        status = await handle.query("status", result_type=FrontierStatus)
        assert status is not None and status.queued == 5


async def test_it_continues_as_new_and_keeps_serving(skipping: WorkflowEnvironment) -> None:
    fake = FakeTopUp()
    async with frontier(skipping, fake, max_top_ups_per_run=2) as handle:
        await wait_calls(fake, 1)
        await handle.signal("wake")
        await wait_calls(fake, 2)
        await handle.signal("wake")
        await wait_calls(fake, 3)
        desc = await handle.describe()
        assert desc.run_id != handle.result_run_id  # a new run serves the third wake-up
