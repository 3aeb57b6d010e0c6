"""Re-scoring after a promotion: the backlog a re-score job reads (items waiting for people,
or with a review open, whose current label is not a person's) and the review tasks it
supersedes when the policy now auto-accepts their items."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import and_, exists, select, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_ITEM, T_JOB, T_JOB_ITEM, T_LABEL, T_REVIEW_TASK, _insert_ignore
from catalog.jobs import create_job, set_job_counts
from catalog.labels import PEOPLE
from catalog.models import utcnow

SUPERSEDED = "superseded"
BACKLOG_STATES = ("queued", "opening", "awaiting", "escalated")


class BacklogItem(NamedTuple):
    item_id: str
    text: str
    policy_id: str  # the routing policy that sent it to people


async def backlog_datasets(conn: AsyncConnection, task: str) -> list[str]:
    """The task's datasets with review tasks still waiting or open."""
    t = T_REVIEW_TASK.c
    datasets = select(T_JOB.c.dataset).where(T_JOB.c.task == task).distinct()
    rows = await conn.execute(
        select(t.dataset)
        .where(t.dataset.in_(datasets), t.closed_at.is_(None), t.state.in_(BACKLOG_STATES))
        .distinct()
        .order_by(t.dataset)
    )
    return [r[0] for r in rows]


async def backlog(conn: AsyncConnection, dataset: str) -> list[BacklogItem]:
    """Items of the dataset whose review is waiting or open and whose current label is not a
    person's (reviewed or imported: never overwritten by agents), one per item, by id."""
    t, lbl, item = T_REVIEW_TASK.c, T_LABEL.c, T_ITEM.c
    human = exists().where(
        and_(
            lbl.dataset == t.dataset,
            lbl.item_id == t.item_id,
            lbl.is_current.is_(True),
            lbl.source.in_(PEOPLE),
        )
    )
    rows = await conn.execute(
        select(t.item_id, item.text, t.policy_id)
        .join(T_ITEM, (item.dataset == t.dataset) & (item.id == t.item_id))
        .where(
            t.dataset == dataset,
            t.closed_at.is_(None),
            t.state.in_(BACKLOG_STATES),
            ~human,
        )
        .order_by(t.item_id, t.opened_at.desc())
        .ext(distinct_on(t.item_id))
    )
    return [BacklogItem(*r) for r in rows]


async def supersede_reviews(
    conn: AsyncConnection, dataset: str, item_ids: Sequence[str], job_id: str, by: str = "rescore"
) -> list[str]:
    """Close the items' waiting or open review tasks as superseded (by re-score `job_id`, or
    what `by` names: `eval` withdraws its job's reviews); returns the workflow ids of those
    that had a ReviewItem open, to be told so."""
    if not item_ids:
        return []
    t = T_REVIEW_TASK.c
    where = (
        (t.dataset == dataset)
        & t.item_id.in_(list(item_ids))
        & t.closed_at.is_(None)
        & t.state.in_(BACKLOG_STATES)
    )
    opened = await conn.execute(
        select(t.workflow_id).where(where, t.state != "queued").with_for_update()
    )
    workflow_ids = sorted({r[0] for r in opened})
    await conn.execute(
        update(T_REVIEW_TASK)
        .where(where)
        .values(state=SUPERSEDED, outcome=f"{by}:{job_id}"[:500], closed_at=utcnow())
    )
    return workflow_ids


async def review_superseded(conn: AsyncConnection, workflow_id: str) -> bool:
    """Whether the catalog closed this review as superseded (and has nothing else open for
    it): what a ReviewItem checks before it believes a `supersede` signal."""
    t = T_REVIEW_TASK.c
    states = [
        r[0]
        for r in await conn.execute(
            select(t.state).where(t.workflow_id == workflow_id, t.closed_at.is_(None))
        )
    ]
    if states:
        return False
    found = await conn.scalar(
        select(t.state).where(t.workflow_id == workflow_id, t.state == SUPERSEDED).limit(1)
    )
    return found is not None


async def create_rescore_job(
    conn: AsyncConnection, row: dict[str, object], item_ids: Sequence[str]
) -> None:
    """The re-score job's row and its items in order (once: a retry adds nothing)."""
    await create_job(conn, row)
    await _insert_ignore(
        conn,
        T_JOB_ITEM,
        [{"job_id": row["id"], "ordinal": i, "item_id": item} for i, item in enumerate(item_ids)],
    )
    await set_job_counts(conn, str(row["id"]), items=len(item_ids), duplicates=0, quarantined=0)
