"""Agents that learn from reviewers: the human labels a task's agents retrain on, the agent
versions a retrain made (promoted or refused, with what each learned from), and which
promoted version a job uses (the newest promoted before the job started)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_AGENT_VERSION, T_GOLD, T_ITEM, T_JOB, T_LABEL
from catalog.labels import PEOPLE

PROMOTED = "promoted"
REFUSED = "refused"


class AgentVersionRow(NamedTuple):
    agent: str
    version: str
    kind: str
    state: str
    s3_key: str
    s3_version_id: str
    trained_on: dict[str, Any]
    gate: dict[str, Any]
    decided_at: datetime


async def human_examples(conn: AsyncConnection, task: str) -> list[tuple[str, str, str, int]]:
    """(item id, text, label, label id) of every current label people gave (reviewed or
    imported) on the task's datasets, and of its gold labels whose items are in the catalog;
    one per text (a person's label wins over gold), by item id."""
    datasets = select(T_JOB.c.dataset).where(T_JOB.c.task == task).distinct()
    lbl, item = T_LABEL.c, T_ITEM.c
    rows = await conn.execute(
        select(lbl.item_id, item.text, lbl.label, lbl.id)
        .join(T_ITEM, (item.dataset == lbl.dataset) & (item.id == lbl.item_id))
        .where(lbl.dataset.in_(datasets), lbl.is_current.is_(True), lbl.source.in_(PEOPLE))
        .order_by(lbl.item_id, lbl.id.desc())
    )
    out: dict[str, tuple[str, str, str, int]] = {}
    for r in rows:
        out.setdefault(r[1], (r[0], r[1], r[2], r[3]))
    g = T_GOLD.c
    gold = await conn.execute(
        select(g.item_id, item.text, g.label)
        .join(T_ITEM, item.id == g.item_id)
        .where(g.task == task)
        .order_by(g.item_id)
        .ext(distinct_on(g.item_id))
    )
    for r in gold:
        out.setdefault(r[1], (r[0], r[1], r[2], 0))
    return sorted(out.values())


async def record_agent_version(conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
    """Record a retrained version's verdict once; False when this version was recorded before
    (a retried activity, or the same labels trained again)."""
    done = await conn.execute(
        insert(T_AGENT_VERSION)
        .values(**row)
        .on_conflict_do_nothing()
        .returning(T_AGENT_VERSION.c.version)
    )
    return done.first() is not None


async def promoted_versions(
    conn: AsyncConnection, task: str, *, as_of: datetime | None = None
) -> dict[str, AgentVersionRow]:
    """Per agent of the task, its newest promoted version (decided at or before `as_of`)."""
    a = T_AGENT_VERSION.c
    query = (
        select(
            a.agent,
            a.version,
            a.kind,
            a.state,
            a.s3_key,
            a.s3_version_id,
            a.trained_on,
            a.gate,
            a.decided_at,
        )
        .where(a.task == task, a.state == PROMOTED)
        .order_by(a.agent, a.decided_at.desc())
        .ext(distinct_on(a.agent))
    )
    if as_of is not None:
        query = query.where(a.decided_at <= as_of)
    return {r[0]: AgentVersionRow(*r) for r in await conn.execute(query)}


async def agent_versions(conn: AsyncConnection, task: str, agent: str) -> list[AgentVersionRow]:
    """Every retrained version of one agent, oldest first."""
    a = T_AGENT_VERSION.c
    rows = await conn.execute(
        select(
            a.agent,
            a.version,
            a.kind,
            a.state,
            a.s3_key,
            a.s3_version_id,
            a.trained_on,
            a.gate,
            a.decided_at,
        )
        .where(a.task == task, a.agent == agent)
        .order_by(a.decided_at)
    )
    return [AgentVersionRow(*r) for r in rows]


async def job_started_at(conn: AsyncConnection, job_id: str) -> datetime | None:
    return await conn.scalar(select(T_JOB.c.started_at).where(T_JOB.c.id == job_id))


async def learned_from(
    conn: AsyncConnection, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """For (agent, version) pairs that a retrain made: what each learned from, and its verdict
    (seed-trained versions are not here: they learned from their task's seed only)."""
    if not pairs:
        return {}
    a = T_AGENT_VERSION.c
    versions = sorted({v for _, v in pairs})
    rows = await conn.execute(
        select(a.agent, a.version, a.state, a.trained_on, a.gate).where(a.version.in_(versions))
    )
    return {
        (r[0], r[1]): {"state": r[2], "trained_on": r[3], "gate": r[4]}
        for r in rows
        if (r[0], r[1]) in pairs
    }
