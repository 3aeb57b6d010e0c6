"""Catalog queries behind `labelfabric dataset …` and `labelfabric explain`: versions, the
changes between them, an item's whole history, restoring an earlier version's labels,
held-out declarations and leaks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import append_audit
from catalog.engine import (
    T_DECISION,
    T_HELDOUT,
    T_ITEM,
    T_JOB,
    T_LABEL,
    T_REVIEW,
    T_REVIEW_TASK,
    T_SNAPSHOT,
    T_SNAPSHOT_CHANGE,
    T_VOTE,
)
from catalog.labels import lock_labels, set_labels
from catalog.models import utcnow


async def datasets(conn: AsyncConnection) -> list[Any]:
    """Per dataset with a snapshot: versions, newest version, its items, time and verdict."""
    s = T_SNAPSHOT.c
    newest = (
        select(s.dataset, func.max(s.version).label("v"), func.count().label("versions"))
        .group_by(s.dataset)
        .subquery()
    )
    rows = await conn.execute(
        select(T_SNAPSHOT, newest.c.versions)
        .join(newest, and_(s.dataset == newest.c.dataset, s.version == newest.c.v))
        .order_by(s.dataset)
    )
    return list(rows.all())


async def versions(conn: AsyncConnection, dataset: str) -> list[Any]:
    """Every snapshot row of the dataset, with `reason`: why the job that made it ran (e.g.
    "drift:<check id>" for a relabel), when it was not new data."""
    s = T_SNAPSHOT.c
    rows = await conn.execute(
        select(T_SNAPSHOT, T_JOB.c.reason)
        .outerjoin(T_JOB, T_JOB.c.id == s.job_id)
        .where(s.dataset == dataset)
        .order_by(s.version)
    )
    return list(rows.all())


async def version(conn: AsyncConnection, dataset: str, number: int) -> Any | None:
    s = T_SNAPSHOT.c
    return (
        await conn.execute(select(T_SNAPSHOT).where(s.dataset == dataset, s.version == number))
    ).first()


async def net_changes(
    conn: AsyncConnection, dataset: str, a: int, b: int
) -> AsyncIterator[tuple[str, str | None, str | None, str | None, str | None]]:
    """(item, label in A, label in B, source, job of B's label) for every item whose label
    differs between versions A and B (either order), from the per-version changes."""
    lo, hi = min(a, b), max(a, b)
    c = T_SNAPSHOT_CHANGE.c
    first = func.min(c.version).label("first")
    last = func.max(c.version).label("last")
    spans = (
        select(c.item_id, first, last)
        .where(c.dataset == dataset, c.version > lo, c.version <= hi)
        .group_by(c.item_id)
        .subquery()
    )
    f = T_SNAPSHOT_CHANGE.alias("f")
    la = T_SNAPSHOT_CHANGE.alias("la")
    query = (
        select(spans.c.item_id, f.c.old_label, la.c.new_label, la.c.source, la.c.job_id)
        .join(
            f,
            and_(
                f.c.dataset == dataset, f.c.item_id == spans.c.item_id, f.c.version == spans.c.first
            ),
        )  # fmt: skip
        .join(
            la,
            and_(
                la.c.dataset == dataset,
                la.c.item_id == spans.c.item_id,
                la.c.version == spans.c.last,
            ),
        )  # fmt: skip
        .order_by(spans.c.item_id)
        .execution_options(yield_per=5000)
    )
    result = await conn.stream(query)
    async for item_id, before, after, source, job_id in result:
        if before == after:
            continue  # changed and changed back
        if a <= b:
            yield item_id, before, after, source, job_id
        else:
            yield item_id, after, before, "rollback to an earlier version", None


async def reviewers_of(
    conn: AsyncConnection, dataset: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[str]]:
    """(item, job) -> the reviewers of that human label."""
    if not keys:
        return {}
    lbl = T_LABEL.c
    rows = await conn.execute(
        select(lbl.item_id, lbl.job_id, lbl.reviewers).where(
            lbl.dataset == dataset,
            lbl.source == "human",
            func.row(lbl.item_id, lbl.job_id).in_([func.row(i, j) for i, j in keys]),
        )
    )
    return {(r[0], r[1]): list(r[2]) for r in rows}


# --- one item's history ---------------------------------------------------------------------


async def item_datasets(conn: AsyncConnection, prefix: str) -> list[tuple[str, str]]:
    """(dataset, item id) of items whose id starts with `prefix`."""
    i = T_ITEM.c
    rows = await conn.execute(
        select(i.dataset, i.id).where(i.id.startswith(prefix)).order_by(i.dataset).limit(50)
    )
    return [(r[0], r[1]) for r in rows]


async def item_history(conn: AsyncConnection, dataset: str, item_id: str) -> dict[str, Any]:
    """Everything the catalog knows about one item of one dataset, oldest first."""
    i, v, d, lbl = T_ITEM.c, T_VOTE.c, T_DECISION.c, T_LABEL.c
    item = (await conn.execute(select(T_ITEM).where(i.dataset == dataset, i.id == item_id))).one()
    votes = await conn.execute(
        select(T_VOTE).where(v.dataset == dataset, v.item_id == item_id).order_by(v.job_id)
    )
    decisions = await conn.execute(
        select(T_DECISION, T_JOB.c.started_at)
        .join(T_JOB, T_JOB.c.id == d.job_id)
        .where(d.dataset == dataset, d.item_id == item_id)
        .order_by(d.decided_at)
    )
    reviews = await conn.execute(
        select(T_REVIEW)
        .where(T_REVIEW.c.dataset == dataset, T_REVIEW.c.item_id == item_id)
        .order_by(T_REVIEW.c.submitted_at)
    )
    tasks = await conn.execute(
        select(T_REVIEW_TASK)
        .where(T_REVIEW_TASK.c.dataset == dataset, T_REVIEW_TASK.c.item_id == item_id)
        .order_by(T_REVIEW_TASK.c.opened_at)
    )
    labels = await conn.execute(
        select(T_LABEL).where(lbl.dataset == dataset, lbl.item_id == item_id).order_by(lbl.id)
    )
    c = T_SNAPSHOT_CHANGE.c
    changes = await conn.execute(
        select(T_SNAPSHOT_CHANGE)
        .where(c.dataset == dataset, c.item_id == item_id)
        .order_by(c.version)
    )
    snaps = await versions(conn, dataset)
    return {
        "item": item,
        "votes": list(votes.all()),
        "decisions": list(decisions.all()),
        "reviews": list(reviews.all()),
        "review_tasks": list(tasks.all()),
        "labels": list(labels.all()),
        "changes": list(changes.all()),
        "snapshots": snaps,
    }


def versions_containing(changes: Sequence[Any], snapshots: Sequence[Any]) -> list[tuple[Any, str]]:
    """(snapshot row, label in it) for each version that holds the item, replaying its
    per-version changes (added, relabelled, removed)."""
    by_version = {ch.version: ch.new_label for ch in changes}
    out: list[tuple[Any, str]] = []
    label: str | None = None
    for snap in snapshots:
        if snap.version in by_version:
            label = by_version[snap.version]
        if label is not None:
            out.append((snap, label))
    return out


# --- rollback -------------------------------------------------------------------------------


async def unset_labels(conn: AsyncConnection, dataset: str, item_ids: Sequence[str]) -> None:
    """Items leave the dataset's current labels (history keeps their rows)."""
    lbl = T_LABEL.c
    for k in range(0, len(item_ids), 1000):
        await conn.execute(
            update(T_LABEL)
            .where(
                lbl.dataset == dataset,
                lbl.is_current.is_(True),
                lbl.item_id.in_(item_ids[k : k + 1000]),
            )
            .values(is_current=False)
        )


async def current_label_map(conn: AsyncConnection, dataset: str) -> dict[str, str]:
    lbl = T_LABEL.c
    rows = await conn.execute(
        select(lbl.item_id, lbl.label).where(lbl.dataset == dataset, lbl.is_current.is_(True))
    )
    return {r[0]: r[1] for r in rows}


class Restored(NamedTuple):
    """What `restore_labels` did: the newest version before it, labels set, labels removed."""

    latest: int
    changed: int
    removed: int


async def restore_labels(
    conn: AsyncConnection,
    dataset: str,
    to: int,
    labels: Mapping[str, str],
    *,
    actor: str,
    reason: str,
    stamp: str,
) -> Restored:
    """Make `labels` (version `to`'s, read from its verified content) the dataset's current
    labels: items whose label differs get it (source "rollback"), items not in it leave;
    audited as one `dataset_rollback` event keyed by `stamp`. The next snapshot version then
    holds version `to`'s content. The dataset must have a version."""
    # The lock set_labels takes, taken first: no chunk or review changes a label between
    # reading the current ones and replacing them (re-entrant within this transaction).
    await lock_labels(conn, dataset)
    latest = (await versions(conn, dataset))[-1].version
    current = await current_label_map(conn, dataset)
    changed = {i: lbl for i, lbl in labels.items() if current.get(i) != lbl}
    gone = sorted(i for i in current if i not in labels)
    job_id = f"rollback:{dataset}:{to}:{stamp}"
    await set_labels(conn, dataset=dataset, job_id=job_id, labels=changed, source="rollback",
                     reviewers=[actor])  # fmt: skip
    await unset_labels(conn, dataset, gone)
    await append_audit(
        conn,
        key=job_id,
        actor=actor,
        kind=kinds.DATASET_ROLLBACK,
        subject=f"dataset:{dataset}",
        payload={"to": to, "from": latest, "set": len(changed), "unset": len(gone),
                 "reason": reason},
    )  # fmt: skip
    return Restored(latest, len(changed), len(gone))


# --- held-out sets and leaks -----------------------------------------------------------------


async def declare_heldout(
    conn: AsyncConnection, dataset: str, of: str, actor: str, reason: str
) -> None:
    from sqlalchemy.dialects.postgresql import insert

    stmt = insert(T_HELDOUT).values(
        dataset=dataset, heldout_for=of, actor=actor, reason=reason, declared_at=utcnow()
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[T_HELDOUT.c.dataset],
            set_={"heldout_for": of, "actor": actor, "reason": reason},
        )
    )
    await append_audit(
        conn,
        key=f"heldout:{dataset}:{of}:{utcnow().isoformat()}",
        actor=actor,
        kind=kinds.DATASET_HELDOUT,
        subject=f"dataset:{dataset}",
        payload={"heldout_for": of, "reason": reason},
    )


async def related(conn: AsyncConnection, dataset: str) -> list[str]:
    """Datasets that must share no content with `dataset`: its held-out set(s), or the
    dataset it is held out for."""
    h = T_HELDOUT.c
    rows = await conn.execute(
        select(h.dataset, h.heldout_for).where((h.dataset == dataset) | (h.heldout_for == dataset))
    )
    return sorted({r[1] if r[0] == dataset else r[0] for r in rows})


async def placements(
    conn: AsyncConnection, datasets: Sequence[str], item_ids: Sequence[str]
) -> dict[str, list[tuple[str, str | None]]]:
    """item id -> [(dataset, split)] where it already sits, among `datasets`."""
    i = T_ITEM.c
    out: dict[str, list[tuple[str, str | None]]] = {}
    for k in range(0, len(item_ids), 1000):
        rows = await conn.execute(
            select(i.id, i.dataset, i.split).where(
                i.dataset.in_(list(datasets)), i.id.in_(list(item_ids[k : k + 1000]))
            )
        )
        for r in rows:
            out.setdefault(r[0], []).append((r[1], r[2]))
    return out


async def leaks(conn: AsyncConnection, dataset: str) -> list[tuple[str, str, str, str]]:
    """(kind, item id, here, there) for content that sits both in `dataset` and in a dataset
    it is held out for (or that is held out for it). Within one dataset an item has one split
    (ingest refuses a record that names another), so leaks are across datasets."""
    i = T_ITEM.c
    other = T_ITEM.alias("other")
    out: list[tuple[str, str, str, str]] = []
    for rel in await related(conn, dataset):
        across = await conn.execute(
            select(i.id, i.split, other.c.split)
            .join(other, and_(other.c.id == i.id, other.c.dataset == rel))
            .where(i.dataset == dataset)
            .order_by(i.id)
        )
        out += [
            ("held-out", r[0], f"{dataset}:{r[1] or 'pool'}", f"{rel}:{r[2] or 'pool'}")
            for r in across
        ]
    return out
