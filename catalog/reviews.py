"""Human review: the items a chunk routes to people, their review tasks and votes, and the
reviews recorded (with each reviewer's tally)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import (
    BATCH_ROWS,
    T_DECISION,
    T_ITEM,
    T_JOB_ITEM,
    T_REVIEW,
    T_REVIEW_TASK,
    T_VOTE,
    _insert_ignore,
)
from catalog.models import utcnow


async def routed_items(
    conn: AsyncConnection, *, job_id: str, dataset: str, start: int, end: int
) -> list[tuple[str, str, str, float | None]]:
    """(item id, rule id, sensitivity, priority) of a chunk's items routed to human review."""
    rows = await conn.execute(
        select(
            T_DECISION.c.item_id,
            T_DECISION.c.rule_id,
            T_ITEM.c.sensitivity,
            T_DECISION.c.priority,
        )
        .join(
            T_JOB_ITEM,
            (T_JOB_ITEM.c.job_id == T_DECISION.c.job_id)
            & (T_JOB_ITEM.c.item_id == T_DECISION.c.item_id),
        )
        .join(T_ITEM, (T_ITEM.c.dataset == dataset) & (T_ITEM.c.id == T_DECISION.c.item_id))
        .where(T_DECISION.c.job_id == job_id, T_DECISION.c.outcome == "human_review")
        .where(T_JOB_ITEM.c.ordinal >= start, T_JOB_ITEM.c.ordinal < end)
        .order_by(T_JOB_ITEM.c.ordinal)
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def open_review_tasks(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Review tasks, once per (dataset, item, job): a retried chunk adds nothing."""
    await _insert_ignore(conn, T_REVIEW_TASK, rows)


async def votes_of(
    conn: AsyncConnection, *, job_id: str, item_ids: Sequence[str]
) -> dict[str, list[tuple[str, str, str | None, float, str]]]:
    """Each item's votes in a job: (agent, version, label, confidence, rationale), by agent."""
    out: dict[str, list[tuple[str, str, str | None, float, str]]] = {i: [] for i in item_ids}
    ids = list(item_ids)
    for i in range(0, len(ids), BATCH_ROWS):
        rows = await conn.execute(
            select(
                T_VOTE.c.item_id,
                T_VOTE.c.agent,
                T_VOTE.c.agent_version,
                T_VOTE.c.label,
                T_VOTE.c.confidence,
                T_VOTE.c.rationale,
            )
            .where(T_VOTE.c.job_id == job_id, T_VOTE.c.item_id.in_(ids[i : i + BATCH_ROWS]))
            .order_by(T_VOTE.c.item_id, T_VOTE.c.agent)
        )
        for r in rows:
            out[r[0]].append((r[1], r[2], r[3], r[4], r[5]))
    return out


async def record_reviews(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Reviews made elsewhere (imports), once per review_key."""
    await _insert_ignore(conn, T_REVIEW, rows)


async def reviewer_stats(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    """Per reviewer: accepted and refused submissions, gold checks answered and right."""
    r = T_REVIEW.c
    rows = await conn.execute(
        select(
            r.reviewer,
            func.count().filter(r.accepted).label("accepted"),
            func.count().filter(~r.accepted).label("refused"),
            func.count().filter(r.correct.is_not(None)).label("gold"),
            func.count().filter(r.correct.is_(True)).label("correct"),
        ).group_by(r.reviewer)
    )
    return {row.reviewer: dict(row._mapping) for row in rows}


async def item_text(conn: AsyncConnection, dataset: str, item_id: str) -> str | None:
    """The text a reviewer reads: the item's, from the catalog (never from a workflow)."""
    return await conn.scalar(
        select(T_ITEM.c.text).where(T_ITEM.c.dataset == dataset, T_ITEM.c.id == item_id)
    )


async def item_redactions(conn: AsyncConnection, dataset: str, item_id: str) -> list[Any]:
    """The PII spans recorded for an item at ingest ({"type", "start", "end"}; no values)."""
    found = await conn.scalar(
        select(T_ITEM.c.redactions).where(T_ITEM.c.dataset == dataset, T_ITEM.c.id == item_id)
    )
    return list(found) if isinstance(found, list) else []


async def votes_by_item(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[str, str, str | None, float | None]]]:
    """(item id, job id) -> each agent's (agent, version, label, confidence) in that job."""
    v = T_VOTE.c
    out: dict[tuple[str, str], list[tuple[str, str, str | None, float | None]]] = {}
    by_job: dict[str, list[str]] = {}
    for item_id, job_id in keys:
        by_job.setdefault(job_id, []).append(item_id)
    for job_id, ids in by_job.items():
        rows = await conn.execute(
            select(v.item_id, v.agent, v.agent_version, v.label, v.confidence)
            .where(v.job_id == job_id, v.item_id.in_(ids))
            .order_by(v.item_id, v.agent)
        )
        for r in rows:
            out.setdefault((r[0], job_id), []).append((r[1], r[2], r[3], r[4]))
    return out


async def insert_review(conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
    """One submission, keyed by its update id or signal: recorded once however often sent.
    True when this call recorded it."""
    done = await conn.execute(insert(T_REVIEW).values(**row).on_conflict_do_nothing())
    return bool(done.rowcount)


async def close_review_task(
    conn: AsyncConnection,
    *,
    dataset: str,
    item_id: str,
    state: str,
    label: str | None,
    outcome: str | None,
) -> list[float]:
    """Close the item's open review task with how it ended; the seconds each row closed
    by this call waited since it was routed (none when a retry finds it closed)."""
    t = T_REVIEW_TASK.c
    closed = await conn.execute(
        update(T_REVIEW_TASK)
        .where(t.dataset == dataset, t.item_id == item_id, t.closed_at.is_(None))
        .values(state=state, label=label, outcome=outcome, closed_at=utcnow())
        .returning(t.opened_at, t.closed_at)
    )
    return [(c - o).total_seconds() for o, c in closed.all()]
