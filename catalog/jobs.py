"""Jobs: creating or reclaiming a job's row, its ingested items and counts, its chunks'
items and recorded outcomes, and what it was labeled with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import (
    BATCH_ROWS,
    T_DECISION,
    T_ITEM,
    T_JOB,
    T_JOB_ITEM,
    T_REJECTED,
    T_SHADOW_DECISION,
    T_VOTE,
    _insert_ignore,
)
from catalog.labels import set_labels
from catalog.models import utcnow
from catalog.rows import JobRow


async def create_job(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    values = {"started_at": utcnow(), **row}
    await conn.execute(insert(T_JOB).values(**values).on_conflict_do_nothing())


async def claim_job(conn: AsyncConnection, row: Mapping[str, Any]) -> str | None:
    """Create the job row, or take over its own earlier row; why not, when it cannot.

    A job id names one run over one source: the same id with another dataset, source or
    task, or again after the job completed, is refused, so two sources never mix in one
    job's counts and snapshot. A failed job may be run again with the same source (a fix,
    then a retry): it reopens with the new run's policy and agents.
    """
    await create_job(conn, row)
    old = (await conn.execute(select(T_JOB).where(T_JOB.c.id == row["id"]).with_for_update())).one()
    for name in ("dataset", "source", "task"):
        if getattr(old, name) != row[name]:
            return (
                f"job {row['id']} already exists for {name} {getattr(old, name)!r} (this run "
                f"gives {row[name]!r}): a job id names one source; start with a new job id"
            )
    if old.status == "completed":
        return (
            f"job {row['id']} already completed (source {old.source}); its result stands: "
            "start with a new job id to label again"
        )
    if old.status == "failed":
        keep = ("policy_id", "policy_version", "policy_sha256", "agents")
        await conn.execute(
            update(T_JOB)
            .where(T_JOB.c.id == row["id"])
            .values(status="running", finished_at=None, **{k: row[k] for k in keep})
        )
    return None


async def record_ingest(
    conn: AsyncConnection,
    *,
    job_id: str,
    items: Sequence[Mapping[str, Any]],
    job_items: Sequence[Mapping[str, Any]],
    rejected: Sequence[Mapping[str, Any]],
) -> None:
    await _insert_ignore(conn, T_ITEM, items)
    await _insert_ignore(conn, T_JOB_ITEM, job_items)
    await _insert_ignore(conn, T_REJECTED, rejected)


async def assign_splits(conn: AsyncConnection, dataset: str, splits: Mapping[str, str]) -> None:
    """Give pool items (split NULL) the split a source names; an item's split never changes."""
    by_split: dict[str, list[str]] = {}
    for item_id, split in splits.items():
        by_split.setdefault(split, []).append(item_id)
    for split, ids in by_split.items():
        for i in range(0, len(ids), BATCH_ROWS):
            await conn.execute(
                update(T_ITEM)
                .where(
                    T_ITEM.c.dataset == dataset,
                    T_ITEM.c.id.in_(ids[i : i + BATCH_ROWS]),
                    T_ITEM.c.split.is_(None),
                )
                .values(split=split)
            )


async def set_job_counts(
    conn: AsyncConnection, job_id: str, *, items: int, duplicates: int, quarantined: int
) -> None:
    await conn.execute(
        update(T_JOB)
        .where(T_JOB.c.id == job_id)
        .values(items=items, duplicates=duplicates, quarantined=quarantined)
    )


async def finish_job(conn: AsyncConnection, job_id: str, status: str) -> bool:
    """Close a running job; False when it was not running (already closed, or never made)."""
    result = await conn.execute(
        update(T_JOB)
        .where(T_JOB.c.id == job_id, T_JOB.c.finished_at.is_(None))
        .values(status=status, finished_at=utcnow())
    )
    return bool(result.rowcount)


async def job(conn: AsyncConnection, job_id: str) -> JobRow | None:
    row = (await conn.execute(select(T_JOB).where(T_JOB.c.id == job_id))).first()
    return None if row is None else JobRow(**row._mapping)


async def dataset_task(conn: AsyncConnection, dataset: str) -> str | None:
    """The task of a dataset's newest job (a dataset is labeled for one task)."""
    j = T_JOB.c
    return await conn.scalar(
        select(j.task).where(j.dataset == dataset).order_by(j.started_at.desc()).limit(1)
    )


async def job_agents_and_policies(conn: AsyncConnection, job_ids: Iterable[str]) -> dict[str, Any]:
    """Agent versions and policy versions that produced a set of jobs' decisions."""
    ids = sorted(set(job_ids))
    agents = await conn.execute(
        select(T_VOTE.c.agent, T_VOTE.c.agent_version)
        .where(T_VOTE.c.job_id.in_(ids))
        .distinct()
        .order_by(T_VOTE.c.agent, T_VOTE.c.agent_version)
    )
    policies = await conn.execute(
        select(T_JOB.c.policy_id, T_JOB.c.policy_version, T_JOB.c.policy_sha256)
        .where(T_JOB.c.id.in_(ids))
        .distinct()
        .order_by(T_JOB.c.policy_id, T_JOB.c.policy_version)
    )
    return {
        "agents": [{"name": a, "version": v} for a, v in agents],
        "policies": [{"id": p, "version": v, "sha256": s} for p, v, s in policies],
    }


# --- chunks ------------------------------------------------------------------------------


async def chunk_items(
    conn: AsyncConnection, *, job_id: str, dataset: str, start: int, end: int
) -> list[tuple[str, str]]:
    """(item id, text) for ordinals [start, end) of a job, in ordinal order."""
    rows = await conn.execute(
        select(T_JOB_ITEM.c.item_id, T_ITEM.c.text)
        .join(T_ITEM, (T_ITEM.c.id == T_JOB_ITEM.c.item_id) & (T_ITEM.c.dataset == dataset))
        .where(T_JOB_ITEM.c.job_id == job_id, T_JOB_ITEM.c.ordinal >= start)
        .where(T_JOB_ITEM.c.ordinal < end)
        .order_by(T_JOB_ITEM.c.ordinal)
    )
    return [(r[0], r[1]) for r in rows]


async def decided_outcomes(
    conn: AsyncConnection, *, job_id: str, item_ids: Sequence[str]
) -> dict[str, str]:
    """Outcomes already recorded for these items in this job (a retried chunk skips them)."""
    if not item_ids:
        return {}
    rows = await conn.execute(
        select(T_DECISION.c.item_id, T_DECISION.c.outcome).where(
            T_DECISION.c.job_id == job_id, T_DECISION.c.item_id.in_(list(item_ids))
        )
    )
    return {r[0]: r[1] for r in rows}


async def record_chunk(
    conn: AsyncConnection,
    *,
    dataset: str,
    job_id: str,
    votes: Sequence[Mapping[str, Any]],
    decisions: Sequence[Mapping[str, Any]],
    accepted: Mapping[str, str],
    shadow: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Votes, decisions, shadow candidates' decisions and the labels of auto-accepted items
    (item id → label)."""
    await _insert_ignore(conn, T_VOTE, votes)
    await _insert_ignore(conn, T_DECISION, decisions)
    await _insert_ignore(conn, T_SHADOW_DECISION, shadow)
    if accepted:
        await set_labels(conn, dataset=dataset, job_id=job_id, labels=accepted, source="agent")


async def existing_jobs(conn: AsyncConnection, job_ids: Sequence[str]) -> set[str]:
    """Which of these job ids the catalog has (running, completed or failed)."""
    if not job_ids:
        return set()
    return set(await conn.scalars(select(T_JOB.c.id).where(T_JOB.c.id.in_(list(job_ids)))))
