"""What a reviewer does, once, for both the CLI (`worker/cli/review.py`) and the review page
(`worker/web/`): read the queue, find one item's review, read its text, submit a label.

The queue is Temporal's visibility (`ReviewState` search attribute), so it is the same list
`temporal workflow list --query 'ReviewState="awaiting"'` shows. Item text comes from the
catalog, never from workflow history, rewritten in its task's `reviewers` PII mode.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import FailureError
from temporalio.service import RPCError

from activities.ids import (
    OPEN_REVIEWS_QUERY,
    REVIEW_ITEM_WORKFLOW,
    SA_LABEL_DATASET,
    parse_review_workflow_id,
    review_workflow_id,
)
from activities.payloads import REVIEW_STATE, ReviewReceipt, ReviewStateView, ReviewSubmission
from catalog import db


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
    reviewers: list[str]


async def queue(
    client: Client, *, dataset: str | None, reviewer: str | None, limit: int
) -> tuple[list[QueueRow], int]:
    """Up to `limit` open reviews (oldest first) and how many there are in all."""
    query = OPEN_REVIEWS_QUERY
    if dataset:
        query += f' AND {SA_LABEL_DATASET} = "{_quoted(dataset)}"'
    rows: list[QueueRow] = []
    count = 0
    async for w in client.list_workflows(query):
        allowed = list((await w.memo()).get("reviewers", []))
        if reviewer and reviewer not in allowed:
            continue
        count += 1
        parsed = parse_review_workflow_id(w.id)
        if parsed is None:  # a ReviewItem started by hand under another id
            continue
        ds, item = parsed
        state = w.typed_search_attributes.get(REVIEW_STATE) or ""
        rows.append(QueueRow(w.id, ds, item, state, w.start_time, allowed))
    rows.sort(key=lambda r: (r.since, r.workflow_id))
    return rows[:limit], count


async def find(client: Client, item: str, dataset: str | None) -> WorkflowHandle:
    """The review workflow of ITEM: a full item id, or a unique prefix as the queue shows."""
    if dataset and len(item) == 64:
        return client.get_workflow_handle(review_workflow_id(dataset, item))
    query = f'WorkflowType = "{REVIEW_ITEM_WORKFLOW}"'
    if dataset:
        query += f' AND {SA_LABEL_DATASET} = "{_quoted(dataset)}"'
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


def _quoted(value: str) -> str:
    """A value safe inside a double-quoted visibility query string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
