"""Labels: making labels current (history kept, one current label per item), and reading a
dataset's current labels and the votes behind them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from catalog.engine import BATCH_ROWS, T_ITEM, T_LABEL, T_VOTE, _insert_ignore
from catalog.models import utcnow


async def lock_labels(conn: AsyncConnection, dataset: str) -> None:
    """The dataset's label-change lock, until the transaction ends."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"label:{dataset}"}
    )


# Label sources that are people's answers: agents never supersede them.
PEOPLE = ("human", "import")


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
    human: set[str] = set()
    for i in range(0, len(ids), BATCH_ROWS):
        rows = await conn.execute(
            select(T_LABEL.c.item_id, T_LABEL.c.id, T_LABEL.c.job_id, T_LABEL.c.source).where(
                T_LABEL.c.dataset == dataset,
                T_LABEL.c.is_current.is_(True),
                T_LABEL.c.item_id.in_(ids[i : i + BATCH_ROWS]),
            )
        )
        for r in rows:
            current[r[0]] = (r[1], r[2])
            if r[3] in PEOPLE:
                human.add(r[0])
    if source == "agent":
        # A person's label (a review's, or one imported from another tool) is never
        # overwritten by agents (a later job, a re-score, a relabel): it stays current, and
        # the agents' decision stays on record.
        ids = [i for i in ids if i not in human]
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
