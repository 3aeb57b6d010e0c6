"""Agent reliability: fitted Dawid–Skene models, and a job's votes and decisions to score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_DECISION, T_RELIABILITY, T_VOTE, _insert_ignore
from catalog.models import utcnow
from catalog.rows import JobDecisionRow, JobVoteRow


async def record_reliability(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    """A fitted reliability model, once per (task, version)."""
    await _insert_ignore(conn, T_RELIABILITY, [row])


async def store_reliability(
    conn: AsyncConnection,
    *,
    task: str,
    version: str,
    agents: Sequence[str],
    model: Mapping[str, Any],
    fitted_on: str,
    items: int,
    alpha: float | None,
    method: str = "dawid_skene",
) -> None:
    """Keep a reliability model fitted outside a job (a calibration: `model` is
    `DawidSkene.to_dict()`), once per (task, version); jobs of the task that start afterwards
    aggregate with it."""
    await record_reliability(
        conn,
        {
            "task": task,
            "version": version,
            "method": method,
            "agents": list(agents),
            "model": dict(model),
            "fitted_on": fitted_on,
            "items": items,
            "alpha": alpha,
            "created_at": utcnow(),
        },
    )


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
