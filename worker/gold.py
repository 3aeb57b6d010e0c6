"""Loading a gold file into the catalog: `labelfabric review gold FILE --task T`.

Reading and checking the file is `formats.gold`; this writes all of it (or, if any line is bad,
none of it) in one transaction with an audit event that names the file and its sha256.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from agents.tasks import TaskSpec
from catalog import db
from formats.gold import GoldLoad, read_gold


async def load_gold(
    engine: AsyncEngine, task: TaskSpec, path: Path, *, actor: str, label_field: str = "label"
) -> GoldLoad:
    """Check the file, then write all of it (or, if any line is bad, none of it)."""
    result = read_gold(task, path, label_field=label_field)
    if result.refused:
        result.loaded = 0
        return result
    async with engine.begin() as conn:
        await db.record_gold(
            conn,
            task=task.name,
            labels={r.item_id: r.label for r in result.records if r.label is not None},
            source=str(path),
            sha256=result.sha256,
            actor=actor,
        )
    return result
