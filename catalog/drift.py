"""Drift checks: the two windows a check compares, and the checks themselves.

The recent window is the items of the dataset's newest completed job (what just arrived).
The reference is what the dataset was at its last training-ready snapshot made before that
job (or a named version): every item decided up to then. With no such snapshot, it is
everything decided before the window. Each item counts once, with its newest decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_DECISION, T_DRIFT_CHECK, T_ITEM, T_JOB, T_LABEL, T_REVIEW, T_SNAPSHOT


class Decided(NamedTuple):
    item_id: str
    text: str
    label: str | None  # the ensemble's
    confidence: float
    decided_at: datetime


class Reference(NamedTuple):
    description: str  # "D@3 (training-ready)", "everything before the window"
    cutoff: datetime | None  # decisions at or before it are the reference; None: nothing


async def newest_job_items(conn: AsyncConnection, dataset: str) -> list[Decided]:
    """The items of the dataset's newest completed job, with their decisions in that job."""
    j, d, item = T_JOB.c, T_DECISION.c, T_ITEM.c
    newest = (
        select(j.id)
        .where(j.dataset == dataset, j.status == "completed")
        .order_by(j.started_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = await conn.execute(
        select(d.item_id, item.text, d.ensemble_label, d.ensemble_confidence, d.decided_at)
        .join(T_ITEM, (item.dataset == d.dataset) & (item.id == d.item_id))
        .where(d.dataset == dataset, d.job_id == newest)
        .order_by(d.item_id)
    )
    return [Decided(*r) for r in rows]


async def reference(
    conn: AsyncConnection, dataset: str, version: int | None, window_start: datetime | None
) -> Reference:
    """Version `version`, or the last training-ready snapshot made before the window began;
    failing both, everything decided before the window."""
    if window_start is None:
        return Reference(f"{dataset}: nothing decided yet", None)
    s = T_SNAPSHOT.c
    query = select(s.version, s.created_at).where(s.dataset == dataset)
    if version is not None:
        query = query.where(s.version == version)
    else:
        query = query.where(s.training_ready.is_(True), s.created_at < window_start)
    row = (await conn.execute(query.order_by(s.version.desc()).limit(1))).first()
    if row is not None:
        return Reference(f"{dataset}@{row[0]}" + ("" if version else " (training-ready)"), row[1])
    if version is not None:
        return Reference(f"{dataset}@{version} (no such version)", None)
    return Reference("everything decided before the window", window_start)


async def decided(
    conn: AsyncConnection,
    dataset: str,
    *,
    before: datetime,
    strictly: bool = False,
) -> list[Decided]:
    """Items with their newest decision at or before `before` (strictly before, if asked)."""
    d, item = T_DECISION.c, T_ITEM.c
    when = d.decided_at < before if strictly else d.decided_at <= before
    rows = await conn.execute(
        select(d.item_id, item.text, d.ensemble_label, d.ensemble_confidence, d.decided_at)
        .join(T_ITEM, (item.dataset == d.dataset) & (item.id == d.item_id))
        .where(d.dataset == dataset, when)
        .order_by(d.item_id, d.decided_at.desc())
        .ext(distinct_on(d.item_id))
    )
    return [Decided(*r) for r in rows]


async def reviews_of(
    conn: AsyncConnection, dataset: str, item_ids: list[str]
) -> list[tuple[str, str]]:
    """(item id, human label) of the accepted reviews on these items."""
    r = T_REVIEW.c
    rows = await conn.execute(
        select(r.item_id, r.label).where(
            r.dataset == dataset, r.accepted.is_(True), r.item_id.in_(item_ids)
        )
    )
    return [(x[0], x[1]) for x in rows]


async def record_drift_check(conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
    """Record a check once (by its id); False when it was recorded before (a retry)."""
    done = await conn.execute(
        insert(T_DRIFT_CHECK).values(**row).on_conflict_do_nothing().returning(T_DRIFT_CHECK.c.id)
    )
    return done.first() is not None


async def drift_checks(conn: AsyncConnection, dataset: str, limit: int = 50) -> list[Any]:
    """The dataset's newest checks, newest first."""
    c = T_DRIFT_CHECK.c
    rows = await conn.execute(
        select(T_DRIFT_CHECK).where(c.dataset == dataset).order_by(c.checked_at.desc()).limit(limit)
    )
    return list(rows)


async def agent_labeled(
    conn: AsyncConnection, dataset: str, item_ids: list[str]
) -> list[tuple[str, str]]:
    """(item id, text) of these items whose current label an agent gave: what a relabel may
    redo (a person's label is never relabelled)."""
    lbl, item = T_LABEL.c, T_ITEM.c
    rows = await conn.execute(
        select(lbl.item_id, item.text)
        .join(T_ITEM, (item.dataset == lbl.dataset) & (item.id == lbl.item_id))
        .where(
            lbl.dataset == dataset,
            lbl.is_current.is_(True),
            lbl.source == "agent",
            lbl.item_id.in_(item_ids),
        )
        .order_by(lbl.item_id)
    )
    return [(r[0], r[1]) for r in rows]


async def newest_job_policy(conn: AsyncConnection, dataset: str) -> str | None:
    """The routing policy id of the dataset's newest job."""
    j = T_JOB.c
    return await conn.scalar(
        select(j.policy_id).where(j.dataset == dataset).order_by(j.started_at.desc()).limit(1)
    )


async def check_of(conn: AsyncConnection, check_id: str) -> Any:
    """A recorded drift check by id (None if there is none)."""
    return (await conn.execute(select(T_DRIFT_CHECK).where(T_DRIFT_CHECK.c.id == check_id))).first()
