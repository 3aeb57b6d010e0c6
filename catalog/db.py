"""Catalog access: the engine, migrations, and the few statements the activities need.

Every write is keyed by workflow state and uses `ON CONFLICT DO NOTHING`, so a retried
activity repeats nothing. Functions take an open connection; the caller owns the
transaction, which is what makes one chunk's votes, decisions, labels and audit event land
together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from catalog.models import (
    AgentReliability,
    AuditEvent,
    DatasetHeldout,
    Decision,
    GoldLabel,
    Item,
    Job,
    JobItem,
    Label,
    PolicyActivation,
    PolicyShadow,
    RejectedRecord,
    Review,
    ReviewTask,
    ShadowDecision,
    Snapshot,
    SnapshotChange,
    Vote,
    utcnow,
)

MIGRATIONS = Path(__file__).resolve().parent.parent / "infra" / "migrations"
AUDIT_LOCK = 0x6175_6469_74  # "audit": one writer at a time extends the hash chain
ACTIVATION_LOCK = 0x706F_6C69_6379  # "policy": one activation (or shadow change) at a time
GENESIS_HASH = "0" * 64
# Rows per IN (...) list when reading back by id.
BATCH_ROWS = 1000

T_JOB = Job.__table__  # type: ignore[attr-defined]
T_ITEM = Item.__table__  # type: ignore[attr-defined]
T_JOB_ITEM = JobItem.__table__  # type: ignore[attr-defined]
T_REJECTED = RejectedRecord.__table__  # type: ignore[attr-defined]
T_VOTE = Vote.__table__  # type: ignore[attr-defined]
T_DECISION = Decision.__table__  # type: ignore[attr-defined]
T_LABEL = Label.__table__  # type: ignore[attr-defined]
T_SNAPSHOT = Snapshot.__table__  # type: ignore[attr-defined]
T_AUDIT = AuditEvent.__table__  # type: ignore[attr-defined]
T_REVIEW = Review.__table__  # type: ignore[attr-defined]
T_REVIEW_TASK = ReviewTask.__table__  # type: ignore[attr-defined]
T_GOLD = GoldLabel.__table__  # type: ignore[attr-defined]
T_RELIABILITY = AgentReliability.__table__  # type: ignore[attr-defined]
T_ACTIVATION = PolicyActivation.__table__  # type: ignore[attr-defined]
T_SHADOW = PolicyShadow.__table__  # type: ignore[attr-defined]
T_SHADOW_DECISION = ShadowDecision.__table__  # type: ignore[attr-defined]
T_SNAPSHOT_CHANGE = SnapshotChange.__table__  # type: ignore[attr-defined]
T_HELDOUT = DatasetHeldout.__table__  # type: ignore[attr-defined]


def make_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    # hide_parameters: an error names the statement, never the values (item texts, notes),
    # so failures in Temporal history and worker logs carry no labeled data.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True, hide_parameters=True
    )


def migrate(url: str) -> None:
    """Bring the schema to the newest migration. Idempotent; safe from many processes at once.

    Synchronous (Alembic drives its own event loop): call it through `asyncio.to_thread`
    from async code.
    """
    from alembic import command  # imported here: a second off every CLI start
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


async def _insert_ignore(
    conn: AsyncConnection, table: Any, rows: Sequence[Mapping[str, Any]]
) -> None:
    # executemany form: SQLAlchemy compiles the statement once and batches the rows
    # ("insertmanyvalues"); a multi-VALUES literal is recompiled per call and was 4x slower.
    if rows:
        await conn.execute(insert(table).on_conflict_do_nothing(), list(rows))


# --- audit -------------------------------------------------------------------------------


def event_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


async def audit_head(conn: AsyncConnection) -> str:
    """The newest event's hash (the genesis hash for an empty log)."""
    head = await conn.scalar(select(T_AUDIT.c.hash).order_by(T_AUDIT.c.id.desc()).limit(1))
    return str(head or GENESIS_HASH)


async def append_audit(
    conn: AsyncConnection,
    *,
    key: str,
    actor: str,
    kind: str,
    subject: str,
    payload: Mapping[str, Any],
) -> None:
    """Append one event to the hash chain, once per `key`, inside the caller's transaction."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK})
    exists = await conn.scalar(select(T_AUDIT.c.id).where(T_AUDIT.c.event_key == key))
    if exists is not None:
        return
    prev = await conn.scalar(select(T_AUDIT.c.hash).order_by(T_AUDIT.c.id.desc()).limit(1))
    at = utcnow()
    content = {
        "key": key,
        "at": at.isoformat(),
        "actor": actor,
        "kind": kind,
        "subject": subject,
        "payload": dict(payload),
    }
    prev_hash = prev or GENESIS_HASH
    await conn.execute(
        insert(T_AUDIT).values(
            event_key=key,
            at=at,
            actor=actor,
            kind=kind,
            subject=subject,
            payload=dict(payload),
            prev_hash=prev_hash,
            hash=event_hash(prev_hash, content),
        )
    )


# --- jobs and ingest ---------------------------------------------------------------------


async def create_job(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    values = {"started_at": utcnow(), **row}
    await conn.execute(insert(T_JOB).values(**values).on_conflict_do_nothing())


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


async def record_reviews(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Reviews made elsewhere (imports), once per review_key."""
    await _insert_ignore(conn, T_REVIEW, rows)


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


async def lock_labels(conn: AsyncConnection, dataset: str) -> None:
    """The dataset's label-change lock, until the transaction ends."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"label:{dataset}"}
    )


async def set_labels(
    conn: AsyncConnection,
    *,
    dataset: str,
    job_id: str,
    labels: Mapping[str, str],
    source: str,
    reviewers: Sequence[str] = (),
) -> None:
    """Make `labels` current; each new row names the row it supersedes, history stays."""
    # Serialise label changes per dataset so an item never has two current labels.
    await lock_labels(conn, dataset)
    ids = sorted(labels)
    current: dict[str, tuple[int, str]] = {}
    for i in range(0, len(ids), BATCH_ROWS):
        rows = await conn.execute(
            select(T_LABEL.c.item_id, T_LABEL.c.id, T_LABEL.c.job_id).where(
                T_LABEL.c.dataset == dataset,
                T_LABEL.c.is_current.is_(True),
                T_LABEL.c.item_id.in_(ids[i : i + BATCH_ROWS]),
            )
        )
        current.update({r[0]: (r[1], r[2]) for r in rows})
    # Items this job already labeled from this source, current or since superseded: the
    # unique key would refuse a second row, so nothing of theirs may be superseded either
    # (a retry, or the same file imported again after someone relabeled an item).
    done: set[str] = set()
    for i in range(0, len(ids), BATCH_ROWS):
        rows = await conn.execute(
            select(T_LABEL.c.item_id).where(
                T_LABEL.c.dataset == dataset,
                T_LABEL.c.job_id == job_id,
                T_LABEL.c.source == source,
                T_LABEL.c.item_id.in_(ids[i : i + BATCH_ROWS]),
            )
        )
        done.update(r[0] for r in rows)
    new_rows = [
        {
            "dataset": dataset,
            "item_id": item_id,
            "label": labels[item_id],
            "source": source,
            "job_id": job_id,
            "reviewers": list(reviewers),
            "is_current": True,
            "supersedes_id": current[item_id][0] if item_id in current else None,
            "created_at": utcnow(),
        }
        for item_id in ids
        if item_id not in done
    ]
    superseded = [row["supersedes_id"] for row in new_rows if row["supersedes_id"] is not None]
    for i in range(0, len(superseded), BATCH_ROWS):
        await conn.execute(
            update(T_LABEL)
            .where(T_LABEL.c.id.in_(superseded[i : i + BATCH_ROWS]))
            .values(is_current=False)
        )
    await _insert_ignore(conn, T_LABEL, new_rows)


# --- snapshots ---------------------------------------------------------------------------


async def current_labels(
    engine: AsyncEngine, dataset: str, *, batch: int = 5000
) -> AsyncIterator[tuple[str, str, str, str, str, str | None]]:
    """Stream (item id, text, label, source, job id, split) of a dataset's current labels,
    by id."""
    async with engine.connect() as conn:
        result = await conn.stream(
            select(
                T_LABEL.c.item_id,
                T_ITEM.c.text,
                T_LABEL.c.label,
                T_LABEL.c.source,
                T_LABEL.c.job_id,
                T_ITEM.c.split,
            )
            .join(
                T_ITEM, (T_ITEM.c.dataset == T_LABEL.c.dataset) & (T_ITEM.c.id == T_LABEL.c.item_id)
            )
            .where(T_LABEL.c.dataset == dataset, T_LABEL.c.is_current.is_(True))
            .order_by(T_LABEL.c.item_id)
            .execution_options(yield_per=batch)
        )
        async for row in result:
            yield row[0], row[1], row[2], row[3], row[4], row[5]


async def snapshot_for_job(conn: AsyncConnection, dataset: str, job_id: str) -> Any | None:
    return (
        await conn.execute(
            select(T_SNAPSHOT).where(T_SNAPSHOT.c.dataset == dataset, T_SNAPSHOT.c.job_id == job_id)
        )
    ).first()


async def latest_snapshot(conn: AsyncConnection, dataset: str) -> Any | None:
    return (
        await conn.execute(
            select(T_SNAPSHOT)
            .where(T_SNAPSHOT.c.dataset == dataset)
            .order_by(T_SNAPSHOT.c.version.desc())
            .limit(1)
        )
    ).first()


async def lock_dataset_snapshots(conn: AsyncConnection, dataset: str) -> None:
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"snapshot:{dataset}"}
    )


async def next_snapshot_version(conn: AsyncConnection, dataset: str) -> int:
    top = await conn.scalar(
        select(func.max(T_SNAPSHOT.c.version)).where(T_SNAPSHOT.c.dataset == dataset)
    )
    return int(top or 0) + 1


async def insert_changes(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    await _insert_ignore(conn, T_SNAPSHOT_CHANGE, rows)


async def insert_snapshot(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(insert(T_SNAPSHOT).values(**row).on_conflict_do_nothing())


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


# --- human review ------------------------------------------------------------------------


async def routed_items(
    conn: AsyncConnection, *, job_id: str, dataset: str, start: int, end: int
) -> list[tuple[str, str, str]]:
    """(item id, rule id, sensitivity) of a chunk's items routed to human review."""
    rows = await conn.execute(
        select(T_DECISION.c.item_id, T_DECISION.c.rule_id, T_ITEM.c.sensitivity)
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
    return [(r[0], r[1], r[2]) for r in rows]


async def open_review_tasks(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
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


# --- gold checks on reviewers ------------------------------------------------------------


async def upsert_gold(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Known labels; loading a file again replaces a changed label (the audit log keeps both)."""
    for i in range(0, len(rows), BATCH_ROWS):
        stmt = insert(T_GOLD).values(list(rows[i : i + BATCH_ROWS]))
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[T_GOLD.c.task, T_GOLD.c.item_id],
                set_={
                    "label": stmt.excluded.label,
                    "source": stmt.excluded.source,
                    "source_sha256": stmt.excluded.source_sha256,
                    "loaded_at": stmt.excluded.loaded_at,
                },
            )
        )


async def gold_labels(
    conn: AsyncConnection, *, task: str, item_ids: Sequence[str]
) -> dict[str, str]:
    """The known label of each of these items that has one."""
    out: dict[str, str] = {}
    ids = list(item_ids)
    for i in range(0, len(ids), BATCH_ROWS):
        rows = await conn.execute(
            select(T_GOLD.c.item_id, T_GOLD.c.label).where(
                T_GOLD.c.task == task, T_GOLD.c.item_id.in_(ids[i : i + BATCH_ROWS])
            )
        )
        out.update({r[0]: r[1] for r in rows})
    return out


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


async def record_reliability(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    """A fitted reliability model, once per (task, version)."""
    await _insert_ignore(conn, T_RELIABILITY, [row])


async def job_votes_and_decisions(
    conn: AsyncConnection, job_id: str
) -> tuple[Sequence[Any], Sequence[Any]]:
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
    return votes.all(), decisions.all()


async def reliability(conn: AsyncConnection, *, task: str, version: str) -> dict[str, Any] | None:
    """A stored reliability model's parameters (`DawidSkene.to_dict()`), by version."""
    r = T_RELIABILITY.c
    row = await conn.scalar(select(r.model).where(r.task == task, r.version == version))
    return dict(row) if row else None


# --- policy activation ---------------------------------------------------------------------


async def activations(conn: AsyncConnection, policy_id: str | None = None) -> list[Any]:
    """Activation rows, oldest first (of one policy, or of all)."""
    query = select(T_ACTIVATION).order_by(T_ACTIVATION.c.id)
    if policy_id is not None:
        query = query.where(T_ACTIVATION.c.policy_id == policy_id)
    return list((await conn.execute(query)).all())


async def active_policy(conn: AsyncConnection, policy_id: str) -> Any | None:
    """The active version's row of a policy (its newest activation), or None."""
    a = T_ACTIVATION.c
    return (
        await conn.execute(
            select(T_ACTIVATION).where(a.policy_id == policy_id).order_by(a.id.desc()).limit(1)
        )
    ).first()


async def record_activation(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    """One activation (serialised per policy by the caller's advisory lock) + its audit event."""
    await conn.execute(insert(T_ACTIVATION).values(**row))
    await append_audit(
        conn,
        key=f"policy:{row['policy_id']}:{row['action']}:{row['at'].isoformat()}",
        actor=row["actor"],
        kind=f"policy_{row['action']}",
        subject=f"policy:{row['policy_id']}",
        payload={"version": row["version"], "sha256": row["sha256"], "reason": row["reason"]},
    )


async def lock_activations(conn: AsyncConnection) -> None:
    """Serialise activations, rollbacks and shadow changes (transaction-scoped)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ACTIVATION_LOCK})


def rollback_target(rows: Sequence[Any]) -> int | None:
    """The version a rollback returns to: the newest earlier activation of another version."""
    if not rows:
        return None
    current = rows[-1].version
    return next((r.version for r in reversed(rows[:-1]) if r.version != current), None)


async def job(conn: AsyncConnection, job_id: str) -> Any | None:
    return (await conn.execute(select(T_JOB).where(T_JOB.c.id == job_id))).first()


async def dataset_task(conn: AsyncConnection, dataset: str) -> str | None:
    """The task of a dataset's newest job (a dataset is labeled for one task)."""
    j = T_JOB.c
    return await conn.scalar(
        select(j.task).where(j.dataset == dataset).order_by(j.started_at.desc()).limit(1)
    )


async def gold_of_task(conn: AsyncConnection, task: str) -> dict[str, str]:
    """Every known label of a task, by item id (gold sets are thousands of items, not more)."""
    rows = await conn.execute(select(T_GOLD.c.item_id, T_GOLD.c.label).where(T_GOLD.c.task == task))
    return {r[0]: r[1] for r in rows}


async def current_label_votes(engine: AsyncEngine, dataset: str) -> AsyncIterator[list[str | None]]:
    """Per item with a current label, the votes of the job that labeled it (None = abstained)."""
    v, lbl = T_VOTE.c, T_LABEL.c
    async with engine.connect() as conn:
        result = await conn.stream(
            select(v.item_id, func.array_agg(v.label))
            .join(
                T_LABEL,
                (lbl.dataset == v.dataset) & (lbl.item_id == v.item_id) & (lbl.job_id == v.job_id),
            )
            .where(lbl.dataset == dataset, lbl.is_current.is_(True))
            .group_by(v.item_id)
            .execution_options(yield_per=5000)
        )
        async for row in result:
            yield list(row[1])


async def passed_gate_since(
    conn: AsyncConnection, *, policy_id: str, version: int, since: Any
) -> bool:
    """Whether a snapshot made by a job on policy_id@version passed its gate after `since`."""
    snap, j = T_SNAPSHOT.c, T_JOB.c
    found = await conn.scalar(
        select(func.count())
        .select_from(T_SNAPSHOT.join(T_JOB, j.id == snap.job_id))
        .where(
            j.policy_id == policy_id,
            j.policy_version == version,
            snap.training_ready.is_(True),
            snap.created_at > since,
        )
    )
    return bool(found)


# --- shadow runs ------------------------------------------------------------------------------


async def shadows(conn: AsyncConnection, policy_id: str | None = None) -> list[Any]:
    """Attached (not detached) shadow candidates, of one policy or of all, oldest first."""
    query = select(T_SHADOW).where(T_SHADOW.c.detached_at.is_(None)).order_by(T_SHADOW.c.id)
    if policy_id is not None:
        query = query.where(T_SHADOW.c.policy_id == policy_id)
    return list((await conn.execute(query)).all())


async def attach_shadow(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(insert(T_SHADOW).values(**row))
    await append_audit(
        conn,
        key=f"shadow:{row['candidate_id']}@{row['candidate_version']}:on:{row['attached_at']}",
        actor=row["actor"],
        kind="policy_shadow_attached",
        subject=f"policy:{row['policy_id']}",
        payload={
            "candidate": f"{row['candidate_id']}@{row['candidate_version']}",
            "sha256": row["candidate_sha256"],
            "reason": row["reason"],
        },
    )


async def detach_shadow(
    conn: AsyncConnection, shadow: Any, *, actor: str, reason: str, at: Any
) -> None:
    await conn.execute(update(T_SHADOW).where(T_SHADOW.c.id == shadow.id).values(detached_at=at))
    await append_audit(
        conn,
        key=f"shadow:{shadow.id}:detached",
        actor=actor,
        kind="policy_shadow_detached",
        subject=f"policy:{shadow.policy_id}",
        payload={
            "candidate": f"{shadow.candidate_id}@{shadow.candidate_version}",
            "reason": reason,
        },
    )


async def shadow_confusion(
    conn: AsyncConnection, candidate_id: str, version: int, policy_id: str | None = None
) -> list[tuple[str, str, int]]:
    """(decided outcome, candidate outcome, items) over every shadow decision of a candidate
    (beside jobs of `policy_id` only, when given)."""
    d = T_SHADOW_DECISION.c
    rows = await conn.execute(
        select(d.active_outcome, d.outcome, func.count())
        .where(
            d.candidate_id == candidate_id,
            d.candidate_version == version,
            d.policy_id == (policy_id or d.policy_id),
        )
        .group_by(d.active_outcome, d.outcome)
        .order_by(d.active_outcome, d.outcome)
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


async def shadow_examples(
    conn: AsyncConnection,
    candidate_id: str,
    version: int,
    *,
    per_cell: int,
    policy_id: str | None = None,
) -> list[Any]:
    """Up to `per_cell` items per (decided, candidate) pair where they differ, newest first,
    with the item's text, the ensemble's label and confidence, and both rules."""
    d, dec, it = T_SHADOW_DECISION.c, T_DECISION.c, T_ITEM.c
    ranked = (
        select(
            d.active_outcome,
            d.outcome,
            d.active_rule,
            d.rule_id,
            d.error,
            d.item_id,
            d.job_id,
            d.dataset,
            func.row_number()
            .over(partition_by=(d.active_outcome, d.outcome), order_by=d.decided_at.desc())
            .label("n"),
        )
        .where(
            d.candidate_id == candidate_id,
            d.candidate_version == version,
            d.policy_id == (policy_id or d.policy_id),
            d.active_outcome != d.outcome,
        )
        .subquery()
    )
    r = ranked.c
    rows = await conn.execute(
        select(
            r.active_outcome,
            r.outcome,
            r.active_rule,
            r.rule_id,
            r.error,
            r.item_id,
            r.job_id,
            it.text,
            dec.ensemble_label,
            dec.ensemble_confidence,
        )
        .join(T_ITEM, (it.dataset == r.dataset) & (it.id == r.item_id))
        .join(T_DECISION, (dec.job_id == r.job_id) & (dec.item_id == r.item_id))
        .where(r.n <= per_cell)
        .order_by(r.active_outcome, r.outcome, r.n)
    )
    return list(rows.all())
