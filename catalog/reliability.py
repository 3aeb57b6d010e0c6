"""Agent reliability: fitted Dawid–Skene models, and a job's votes and decisions to score."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_DECISION, T_RELIABILITY, T_VOTE, _insert_ignore
from catalog.rows import JobDecisionRow, JobVoteRow


async def record_reliability(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    """A fitted reliability model, once per (task, version)."""
    await _insert_ignore(conn, T_RELIABILITY, [row])


async def job_votes_and_decisions(
    conn: AsyncConnection, job_id: str
) -> tuple[list[JobVoteRow], list[JobDecisionRow]]:
    """A job's votes (item_id, agent, label, confidence) and decisions (item_id, outcome,
    ensemble_label, ensemble_confidence), for scoring it against known labels."""
    v, d = T_VOTE.c, T_DECISION.c
    votes = await conn.execute(
        select(v.item_id, v.agent, v.label, v.confidence).where(v.job_id == job_id)
    )
    decisions = await conn.execute(
        select(d.item_id, d.outcome, d.ensemble_label, d.ensemble_confidence).where(
            d.job_id == job_id
        )
    )
    return (
        [JobVoteRow(**r._mapping) for r in votes],
        [JobDecisionRow(**r._mapping) for r in decisions],
    )


async def reliability(conn: AsyncConnection, *, task: str, version: str) -> dict[str, Any] | None:
    """A stored reliability model's parameters (`DawidSkene.to_dict()`), by version."""
    r = T_RELIABILITY.c
    row = await conn.scalar(select(r.model).where(r.task == task, r.version == version))
    return dict(row) if row else None
