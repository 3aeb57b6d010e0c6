"""Gold checks on reviewers: reading known labels, choosing which review tasks check the
reviewer, and loading a gold file into the catalog whole or not at all."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import text

from agents.tasks import load_task
from formats.sources import LabelField
from worker.gold import load_gold
from worker.main import Runtime
from worker.settings import Settings

LABELS = LabelField("label", ("positive", "negative"))


def sha(t: str) -> str:
    return hashlib.sha256(t.encode()).hexdigest()


async def gold_rows_in_catalog(runtime: Runtime, ids: list[str]) -> dict[str, str]:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT item_id, label FROM gold_label WHERE task = 'sentiment'"
                " AND item_id = ANY(:ids)"
            ),
            {"ids": ids},
        )
        return {r[0]: r[1] for r in rows}


async def test_a_gold_file_with_a_bad_line_loads_nothing_and_names_each_line(
    stack: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    task = load_task(stack.tasks_dir, "sentiment")
    texts = [f"gold test {tmp_path.name} {i}" for i in range(4)]
    lines = [
        {"text": texts[0], "label": "positive"},
        {"text": texts[1], "label": "sideways"},
        {"text": texts[2], "label": "negative"},
        {"text": texts[2], "label": "positive"},  # same text, other label
        {"text": texts[3], "label": "negative"},
        {"text": texts[3], "label": "negative"},  # a plain repeat is fine
    ]
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = await load_gold(runtime.engine, task, path, actor="test")
    assert result.loaded == 0
    assert [(r.line, r.reason.split(",")[0]) for r in result.refused] == [
        (2, "field 'label' is 'sideways'"),
        (4, "same text as line 3 with another label ('positive' here"),
    ]
    assert await gold_rows_in_catalog(runtime, [sha(t) for t in texts]) == {}

    path.write_text("".join(json.dumps(x) + "\n" for i, x in enumerate(lines) if i not in (1, 3)))
    for _ in range(2):  # loading the same file again changes nothing
        result = await load_gold(runtime.engine, task, path, actor="test")
        assert (result.loaded, result.repeated, result.refused) == (3, 1, [])
    assert await gold_rows_in_catalog(runtime, [sha(t) for t in texts]) == {
        sha(texts[0]): "positive",
        sha(texts[2]): "negative",
        sha(texts[3]): "negative",
    }
    async with runtime.engine.connect() as conn:
        events = await conn.scalar(
            text(
                "SELECT count(*) FROM audit_event WHERE kind = 'gold_loaded'"
                " AND payload->>'sha256' = :s"
            ),
            {"s": result.sha256},
        )
    assert events == 1
