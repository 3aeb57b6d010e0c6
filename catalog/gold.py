"""Gold labels: labels known in advance for a task's items, which check reviewers and feed
the snapshot gate's accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import append_audit
from catalog.engine import BATCH_ROWS, T_GOLD
from catalog.models import utcnow


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


async def gold_of_task(conn: AsyncConnection, task: str) -> dict[str, str]:
    """Every known label of a task, by item id (gold sets are thousands of items, not more)."""
    rows = await conn.execute(select(T_GOLD.c.item_id, T_GOLD.c.label).where(T_GOLD.c.task == task))
    return {r[0]: r[1] for r in rows}


async def record_gold(
    conn: AsyncConnection,
    *,
    task: str,
    labels: Mapping[str, str],
    source: str,
    sha256: str,
    actor: str,
) -> None:
    """A whole gold file's labels (item id -> label) for `task`, with a `gold_loaded` audit
    event naming the file and its sha256; in the caller's transaction."""
    now = utcnow()
    await upsert_gold(
        conn,
        [
            {
                "task": task,
                "item_id": item_id,
                "label": label,
                "source": source,
                "source_sha256": sha256,
                "loaded_at": now,
            }
            for item_id, label in labels.items()
        ],
    )
    await append_audit(
        conn,
        key=f"gold:{task}:{sha256}",
        actor=actor,
        kind=kinds.GOLD_LOADED,
        subject=f"task:{task}",
        payload={"file": source, "sha256": sha256, "items": len(labels)},
    )
