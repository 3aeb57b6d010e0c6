"""The review frontier: routed items wait in `review_task` (state `queued`, with a priority)
and at most a dataset's `open_limit` of them have a ReviewItem workflow open at once.

States: queued → opening (chosen; its workflow is being started) → awaiting / escalated →
done / expired. A row left `opening` by a crash is started again (the start is idempotent).
Choosing is serialized per dataset by a transaction-scoped advisory lock, so two top-ups at
once (a job's chunks, the frontier workflow) never open more than the limit between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import append_audit
from catalog.engine import T_DECISION, T_ITEM, T_REVIEW_TASK, _insert_ignore
from catalog.models import utcnow

QUEUED = "queued"
OPENING = "opening"
OPEN_STATES = (OPENING, "awaiting", "escalated")
ERRORED = "errored"


class FrontierRow(NamedTuple):
    """A review task chosen to open: what its ReviewItem workflow is started with."""

    dataset: str
    item_id: str
    job_id: str
    workflow_id: str
    task: str | None
    rule_id: str
    policy_id: str
    policy_version: int
    policy_sha256: str
    gold_label: str | None
    sensitivity: str


class FrontierCounts(NamedTuple):
    open: int  # ReviewItem workflows open (or being opened)
    queued: int  # waiting for room


async def frontier_counts(
    conn: AsyncConnection, dataset: str | None = None
) -> dict[str, FrontierCounts]:
    """Per dataset (or just `dataset`): open review workflows and queued items."""
    t = T_REVIEW_TASK.c
    query = (
        select(
            t.dataset,
            func.count(t.workflow_id.distinct()).filter(t.state.in_(OPEN_STATES)),
            func.count().filter(t.state == QUEUED),
        )
        .where(t.closed_at.is_(None))
        .group_by(t.dataset)
    )
    if dataset is not None:
        query = query.where(t.dataset == dataset)
    return {r[0]: FrontierCounts(r[1], r[2]) for r in await conn.execute(query)}


async def frontier_policy(conn: AsyncConnection, dataset: str) -> tuple[str, int, str] | None:
    """(id, version, sha256) of the policy that routed the dataset's latest waiting item."""
    t = T_REVIEW_TASK.c
    row = (
        await conn.execute(
            select(t.policy_id, t.policy_version, t.policy_sha256)
            .where(t.dataset == dataset, t.closed_at.is_(None))
            .order_by(t.opened_at.desc())
            .limit(1)
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def claim_frontier(conn: AsyncConnection, dataset: str, limit: int) -> list[FrontierRow]:
    """Choose the queued items that fit under `limit` open workflows, highest priority first,
    and mark them `opening`; returns every `opening` row (a crashed top-up's too). Call in a
    transaction: the lock is held until it ends."""
    t = T_REVIEW_TASK.c
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('review-frontier'), hashtext(:d))"),
        {"d": dataset},
    )
    live = (t.dataset == dataset) & t.closed_at.is_(None)
    open_ids = select(t.workflow_id).where(live, t.state.in_(OPEN_STATES))
    # A waiting item whose review is already open (routed again by a later job) joins it.
    await conn.execute(
        update(T_REVIEW_TASK)
        .where(live, t.state == QUEUED, t.workflow_id.in_(open_ids.scalar_subquery()))
        .values(state="awaiting")
    )
    is_open = await conn.scalar(
        select(func.count(t.workflow_id.distinct())).where(live, t.state.in_(OPEN_STATES))
    )
    room = max(0, limit - int(is_open or 0))
    if room:
        # One row per workflow: the same item queued by two jobs opens one review.
        chosen = (
            select(t.job_id, t.item_id)
            .where(live, t.state == QUEUED)
            .ext(distinct_on(t.workflow_id))
            .order_by(t.workflow_id, t.priority.desc().nulls_last(), t.opened_at)
            .subquery()
        )
        ranked = (
            select(chosen.c.job_id, chosen.c.item_id)
            .join(
                T_REVIEW_TASK,
                (t.dataset == dataset)
                & (t.job_id == chosen.c.job_id)
                & (t.item_id == chosen.c.item_id),
            )
            .order_by(t.priority.desc().nulls_last(), t.opened_at, t.item_id)
            .limit(room)
        )
        picked = [(r[0], r[1]) for r in await conn.execute(ranked)]
        for job_id, item_id in picked:
            await conn.execute(
                update(T_REVIEW_TASK)
                .where(t.dataset == dataset, t.job_id == job_id, t.item_id == item_id)
                .values(state=OPENING)
            )
    rows = await conn.execute(
        select(
            t.dataset,
            t.item_id,
            t.job_id,
            t.workflow_id,
            t.task,
            t.rule_id,
            t.policy_id,
            t.policy_version,
            t.policy_sha256,
            t.gold_label,
            T_ITEM.c.sensitivity,
        )
        .join(T_ITEM, (T_ITEM.c.dataset == t.dataset) & (T_ITEM.c.id == t.item_id))
        .where(live, t.state == OPENING)
        .order_by(t.priority.desc().nulls_last(), t.item_id)
    )
    return [FrontierRow(*r) for r in rows]


async def mark_frontier_open(
    conn: AsyncConnection, dataset: str, keys: list[tuple[str, str]]
) -> None:
    """Rows whose workflows were started: (job id, item id) `opening` → `awaiting`."""
    t = T_REVIEW_TASK.c
    for job_id, item_id in keys:
        await conn.execute(
            update(T_REVIEW_TASK)
            .where(
                t.dataset == dataset,
                t.job_id == job_id,
                t.item_id == item_id,
                t.state == OPENING,
            )
            .values(state="awaiting")
        )


async def fail_frontier_rows(
    conn: AsyncConnection, dataset: str, reasons: Mapping[tuple[str, str], str]
) -> None:
    """Close chosen rows that cannot open (their task or pinned policy is gone): state
    `errored`, the reason kept as the outcome, and an audit event each."""
    t = T_REVIEW_TASK.c
    for (job_id, item_id), reason in reasons.items():
        await conn.execute(
            update(T_REVIEW_TASK)
            .where(
                t.dataset == dataset,
                t.job_id == job_id,
                t.item_id == item_id,
                t.state == OPENING,
            )
            .values(state=ERRORED, outcome=reason[:500], closed_at=utcnow())
        )
        await append_audit(
            conn,
            key=f"frontier:{dataset}:{job_id}:{item_id}:errored",
            actor="labelfabric",
            kind=kinds.review_closed(ERRORED),
            subject=f"review:{dataset}:{item_id}",
            payload={"job_id": job_id, "reason": reason[:500]},
        )


async def queue_item_reviews(
    conn: AsyncConnection,
    dataset: str,
    job_id: str,
    task: str,
    items: Sequence[tuple[str, float]],
    rule_id: str,
) -> int:
    """Queue a review of each (item id, priority) in the dataset's frontier, under `job_id`
    and `rule_id` (why people should look); the review rules come from each item's newest
    decision's policy. Items with no decision are left out; returns how many were queued."""
    d = T_DECISION.c
    pins = {
        r[0]: (r[1], r[2], r[3])
        for r in await conn.execute(
            select(d.item_id, d.policy_id, d.policy_version, d.policy_sha256)
            .where(d.dataset == dataset, d.item_id.in_([i for i, _ in items]))
            .order_by(d.item_id, d.decided_at.desc())
            .ext(distinct_on(d.item_id))
        )
    }
    now = utcnow()
    rows = [
        {
            "dataset": dataset,
            "item_id": item_id,
            "job_id": job_id,
            "workflow_id": f"review:{dataset}:{item_id}",
            "state": QUEUED,
            "task": task,
            "priority": priority,
            "rule_id": rule_id,
            "policy_id": pins[item_id][0],
            "policy_version": pins[item_id][1],
            "policy_sha256": pins[item_id][2],
            "gold_label": None,
            "opened_at": now,
        }
        for item_id, priority in items
        if item_id in pins
    ]
    await _insert_ignore(conn, T_REVIEW_TASK, rows)
    return len(rows)
