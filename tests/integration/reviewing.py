"""What the review tests share: the roster, and small helpers (the `routed` job is a fixture in
tests/integration/conftest.py),
for reading the catalog and answering reviews."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import text
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.ids import review_workflow_id
from activities.payloads import (
    LabelDatasetInput,
    LabelDatasetResult,
    ReviewerGrant,
    ReviewReceipt,
    ReviewStateView,
)
from tests.helpers import signed, write_jsonl
from worker.main import Runtime
from worker.settings import Settings

T = TypeVar("T")

ROSTER = [
    ReviewerGrant(id="alice", cleared=True, groups=["primary"]),
    ReviewerGrant(id="bob", cleared=True, groups=["primary"]),
    ReviewerGrant(id="dana", cleared=False, groups=["primary"]),
    ReviewerGrant(id="carol", cleared=True, groups=["senior"]),
]


async def rows(runtime: Runtime, sql: str, **params: object) -> list[tuple[object, ...]]:
    async with runtime.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]


async def eventually(check: Callable[[], Awaitable[T]], within: float = 15.0) -> T:
    """Poll `check` until it returns something truthy, or give its last answer."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


def handle_for(env: WorkflowEnvironment, dataset: str, item: str) -> WorkflowHandle:
    return env.client.get_workflow_handle(
        review_workflow_id(dataset, item), result_type=ReviewStateView
    )


async def submit(
    handle: WorkflowHandle, reviewer: str, label: str, note: str = ""
) -> ReviewReceipt:
    return await handle.execute_update(
        "submit_review",
        signed(reviewer, label, note),
        result_type=ReviewReceipt,
    )


async def label_texts(
    env: WorkflowEnvironment,
    settings: Settings,
    texts: list[str],
    tmp: Path,
    *,
    prefix: str,
    task: str = "sentiment",
    policy: str = "route_default",
) -> tuple[str, LabelDatasetResult]:
    """A real job over `texts` in a fresh dataset named from `prefix`, on `settings`' queue."""
    dataset = f"{prefix}{uuid.uuid4().hex[:6]}"
    source = write_jsonl(tmp / f"{dataset}.jsonl", texts)
    result = await env.client.execute_workflow(
        ids.LABEL_DATASET_WORKFLOW,
        LabelDatasetInput(dataset=dataset, source=str(source), task=task, policy=policy),
        id=ids.label_workflow_id(dataset, "j1"),
        task_queue=settings.task_queue,
        result_type=LabelDatasetResult,
    )
    return dataset, result
