"""What a reviewer does, once, for both the CLI (`worker/cli/review.py`) and the review page
(`worker/web/`): read the queue, find one item's review, read its text, submit a label.

The queue is Temporal's visibility (`ReviewState` and `Dataset` search attributes), so it is
the same list `temporal workflow list --query 'ReviewState="awaiting"'` shows; who may label
each item is the roster as it is now against the item's task and sensitivity in the catalog
(one query for the whole list, never a memo per workflow). Item text comes from the catalog,
never from workflow history, rewritten in its task's `reviewers` PII mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import FailureError
from temporalio.service import RPCError

from activities.ids import (
    OPEN_REVIEWS_QUERY,
    REVIEW_ITEM_WORKFLOW,
    dataset_clause,
    parse_review_workflow_id,
    review_workflow_id,
)
from activities.payloads import REVIEW_STATE, ReviewReceipt, ReviewStateView, ReviewSubmission
from agents.roster import Reviewer, cleared
from catalog import corrections, db

if TYPE_CHECKING:
    from worker.settings import Settings

PREVIEW_CHARS = 160


class ReviewError(Exception):
    """A reviewer's request that cannot be served; the message says why."""


class Refused(ReviewError):
    """The review workflow refused a submission; the message is its reason."""


@dataclass(frozen=True, slots=True)
class QueueRow:
    workflow_id: str
    dataset: str
    item_id: str
    state: str
    since: datetime
    reviewers: list[str]  # who on the roster (now) may label it: its task, their clearance
    task: str | None = None  # of its newest review task, from the catalog
    sensitivity: str | None = None  # the item's, from the catalog


async def queue(
    client: Client,
    engine: AsyncEngine,
    roster: Sequence[Reviewer],
    *,
    dataset: str | None,
    reviewer: str | None,
    limit: int,
) -> tuple[list[QueueRow], int]:
    """Up to `limit` open reviews (oldest first) that `reviewer` (None: anyone on the roster)
    may label, and how many there are in all. An item the catalog does not know is nobody's."""
    query = OPEN_REVIEWS_QUERY + (f" AND {dataset_clause(dataset)}" if dataset else "")
    found: list[tuple[str, str, str, str, datetime]] = []
    async for w in client.list_workflows(query):
        parsed = parse_review_workflow_id(w.id)
        if parsed is None:  # a ReviewItem started by hand under another id
            continue
        state = w.typed_search_attributes.get(REVIEW_STATE) or ""
        found.append((w.id, *parsed, state, w.start_time))
    async with engine.connect() as conn:
        access = await corrections.access_of(conn, [(f[1], f[2]) for f in found])
    rows: list[QueueRow] = []
    for wid, ds, item, state, since in found:
        sensitivity, task = access.get((ds, item), (None, None))
        allowed = [
            r.id
            for r in roster
            if sensitivity is not None and task in r.tasks and cleared(r.clearance, sensitivity)
        ]
        if reviewer is None or reviewer in allowed:
            rows.append(QueueRow(wid, ds, item, state, since, allowed, task, sensitivity))
    rows.sort(key=lambda r: (r.since, r.workflow_id))
    return rows[:limit], len(rows)


async def queue_for(
    settings: Settings, client: Client, *, dataset: str | None, reviewer: str | None, limit: int
) -> tuple[list[QueueRow], int]:
    """`queue` with the settings' roster (simulated reviewers as the setting says) and catalog."""
    from agents.roster import load_roster
    from agents.tasks import TaskError

    try:
        roster = load_roster(settings.roster_path, simulated=settings.simulated_reviewers)
    except TaskError as err:
        raise ReviewError(str(err)) from err
    engine = db.make_engine(settings.catalog_url, pool_size=1)
    try:
        return await queue(client, engine, roster, dataset=dataset, reviewer=reviewer, limit=limit)
    finally:
        await engine.dispose()


def preview(text: str | None, chars: int = PREVIEW_CHARS) -> str:
    """The start of an item's text for a list (already in its `reviewers` PII mode)."""
    if text is None:
        return "(text not in the catalog)"
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1].rstrip() + "…"


async def find(client: Client, item: str, dataset: str | None) -> WorkflowHandle:
    """The review workflow of ITEM: a full item id, or a unique prefix as the queue shows."""
    if dataset and len(item) == 64:
        return client.get_workflow_handle(review_workflow_id(dataset, item))
    query = f'WorkflowType = "{REVIEW_ITEM_WORKFLOW}"'
    if dataset:
        query += f" AND {dataset_clause(dataset)}"
    ids = sorted(
        {
            w.id
            async for w in client.list_workflows(query)
            if w.id.rsplit(":", 1)[-1].startswith(item)
        }
    )
    where = f" in dataset {dataset!r}" if dataset else ""
    if not ids:
        raise ReviewError(
            f"no review for item {item!r}{where}; an item waiting in the review frontier "
            "has none until it opens (`labelfabric review list` shows what is waiting)"
        )
    if len(ids) > 1:
        raise ReviewError(f"item {item!r} is ambiguous: {', '.join(ids[:5])}; give more of its id")
    return client.get_workflow_handle(ids[0])


async def state_of(handle: WorkflowHandle) -> ReviewStateView:
    try:
        return await handle.query("state", result_type=ReviewStateView)
    except RPCError as err:
        raise ReviewError(f"cannot read {handle.id}: {err}") from err


async def item_text(
    engine: AsyncEngine, dataset: str, item_id: str, *, tasks_dir: Path | None = None
) -> str | None:
    """The text a reviewer reads: the item's, in its task's `reviewers` PII mode
    (`agents/pii.py`), detected again and joined with the spans recorded at ingest. When the
    task cannot be read (no `tasks_dir`, or its file is gone or broken), the recorded spans
    are masked: a reviewer never reads what ingest found, whatever the page was given."""
    from agents import pii
    from agents.tasks import TaskError, load_task

    async with engine.connect() as conn:
        text = await db.item_text(conn, dataset, item_id)
        if text is None:
            return None
        stored = pii.spans_of(await db.item_redactions(conn, dataset, item_id))
        task = await db.dataset_task(conn, dataset) if tasks_dir is not None else None
    spec: pii.PiiSpec | None = pii.PiiSpec(modes={"reviewers": "mask"})
    if tasks_dir is not None and task is not None:
        try:
            spec = load_task(tasks_dir, task).pii
        except TaskError:
            pass  # unreadable now: the recorded spans, masked
        else:
            if spec is None:
                return text  # the task detects nothing: reviewers read the text as it is
            found = await asyncio.to_thread(pii.scan, text, spec)
            return pii.view(text, [*stored, *found], spec, "reviewers")
    return pii.view(text, stored, spec, "reviewers")


async def submit(handle: WorkflowHandle, sub: ReviewSubmission) -> ReviewReceipt:
    """Submit through the `submit_review` update; a refusal raises `Refused` with the reason."""
    try:
        return await handle.execute_update("submit_review", sub, result_type=ReviewReceipt)
    except WorkflowUpdateFailedError as err:
        cause = err.cause  # the validator's or handler's failure; its message is the reason
        raise Refused(cause.message if isinstance(cause, FailureError) else str(cause)) from err
    except RPCError as err:
        if "already completed" in str(err):
            raise Refused(f"the review {handle.id} is already closed") from err
        raise Refused(str(err)) from err
