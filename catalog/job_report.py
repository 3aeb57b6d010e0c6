"""What the CLI reports from the catalog beside the workflows: one job's counts and refused
records (`labelfabric job show`), the names a typo is matched against, and what the open
reviews ask of a reviewer (why `review list --reviewer R` may show nothing)."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import func, select, union
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_DECISION, T_ITEM, T_JOB, T_REJECTED, T_REVIEW_TASK, T_SNAPSHOT


class RefusedRow(NamedTuple):
    line: int
    reason: str


class OpenReviewGroup(NamedTuple):
    """Open review tasks of one task at one sensitivity."""

    task: str | None
    sensitivity: str
    items: int


async def known_datasets(conn: AsyncConnection) -> list[str]:
    """Every dataset the catalog has a job or a snapshot of."""
    query = union(select(T_JOB.c.dataset), select(T_SNAPSHOT.c.dataset))
    return sorted(str(r[0]) for r in await conn.execute(query))


async def jobs_named(conn: AsyncConnection, name: str, dataset: str | None) -> list[str]:
    """Job ids that are `name`, or end in `:name` (`label:{dataset}:{name}`)."""
    j = T_JOB.c
    query = select(j.id).where((j.id == name) | j.id.endswith(f":{name}", autoescape=True))
    if dataset is not None:
        query = query.where(j.dataset == dataset)
    return sorted(str(r[0]) for r in await conn.execute(query))


async def recent_jobs(conn: AsyncConnection, limit: int = 500) -> list[str]:
    j = T_JOB.c
    rows = await conn.execute(select(j.id).order_by(j.started_at.desc()).limit(limit))
    return [str(r[0]) for r in rows]


async def outcome_counts(conn: AsyncConnection, job_id: str) -> dict[str, int]:
    d = T_DECISION.c
    rows = await conn.execute(
        select(d.outcome, func.count()).where(d.job_id == job_id).group_by(d.outcome)
    )
    return {str(o): int(n) for o, n in rows}


async def review_states(conn: AsyncConnection, job_id: str) -> dict[str, int]:
    t = T_REVIEW_TASK.c
    rows = await conn.execute(
        select(t.state, func.count()).where(t.job_id == job_id).group_by(t.state)
    )
    return {str(s): int(n) for s, n in rows}


async def refused(conn: AsyncConnection, job_id: str, limit: int) -> tuple[int, list[RefusedRow]]:
    """How many records the job refused at ingest, and the first `limit` by line."""
    r = T_REJECTED.c
    total = await conn.scalar(select(func.count()).where(r.job_id == job_id))
    rows = await conn.execute(
        select(r.line, r.reason).where(r.job_id == job_id).order_by(r.line).limit(limit)
    )
    return int(total or 0), [RefusedRow(int(line), str(reason)) for line, reason in rows]


async def open_review_groups(conn: AsyncConnection, dataset: str | None) -> list[OpenReviewGroup]:
    """Review tasks open (not closed, and not waiting in the frontier), by task and item
    sensitivity."""
    t, i = T_REVIEW_TASK.c, T_ITEM.c
    query = (
        select(t.task, i.sensitivity, func.count())
        .join(T_ITEM, (i.dataset == t.dataset) & (i.id == t.item_id))
        .where(t.closed_at.is_(None), t.state != "queued")
        .group_by(t.task, i.sensitivity)
        .order_by(t.task, i.sensitivity)
    )
    if dataset is not None:
        query = query.where(t.dataset == dataset)
    return [OpenReviewGroup(task, str(s), int(n)) for task, s, n in await conn.execute(query)]


async def unclosed_review_items(conn: AsyncConnection, job_id: str) -> list[str]:
    """Items of the job whose review task is not closed (waiting or open)."""
    t = T_REVIEW_TASK.c
    rows = await conn.execute(
        select(t.item_id).where(t.job_id == job_id, t.closed_at.is_(None)).order_by(t.item_id)
    )
    return [str(r[0]) for r in rows]
