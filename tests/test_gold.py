"""Gold checks on reviewers: reading known labels, choosing which review tasks check the
reviewer, and loading a gold file into the catalog whole or not at all."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from sqlalchemy import text

from activities.review import is_gold_check
from agents.tasks import load_task
from formats.sources import LabelField, Record, Refusal, read_records
from worker.gold import load_gold
from worker.main import Runtime
from worker.settings import Settings

LABELS = LabelField("label", ("positive", "negative"))


def sha(t: str) -> str:
    return hashlib.sha256(t.encode()).hexdigest()


def test_label_field_is_read_and_checked_in_jsonl_and_csv() -> None:
    jsonl = b"\n".join(
        [
            b'{"text": "good", "label": "positive"}',
            b'{"text": "meh"}',
            b'{"text": "bad", "label": "awful"}',
        ]
    )
    out = list(
        read_records(
            io.BytesIO(jsonl), "jsonl", text_field="text", max_chars=50, label_field=LABELS
        )
    )
    assert out[0] == Record(1, sha("good"), "good", "positive")
    assert (
        isinstance(out[1], Refusal)
        and out[1].line == 2
        and "field 'label' is None" in out[1].reason
    )
    assert isinstance(out[2], Refusal) and "'awful', not one of positive, negative" in out[2].reason

    csv = b"text,label\ngood,positive\nbad,neutral\n"
    rows = list(
        read_records(io.BytesIO(csv), "csv", text_field="text", max_chars=50, label_field=LABELS)
    )
    assert rows[0] == Record(2, sha("good"), "good", "positive")
    assert isinstance(rows[1], Refusal) and rows[1].line == 3


def test_gold_checks_take_about_the_configured_fraction_and_always_the_same_items() -> None:
    ids = [sha(str(i)) for i in range(20_000)]
    for fraction in (0.0, 0.1, 0.5, 1.0):
        chosen = [i for i in ids if is_gold_check(i, fraction)]
        assert abs(len(chosen) / len(ids) - fraction) < 0.01
        assert chosen == [i for i in ids if is_gold_check(i, fraction)]
    assert {i for i in ids if is_gold_check(i, 0.1)} <= {i for i in ids if is_gold_check(i, 0.5)}
    # Unrelated to the id's own order: items split off by id (as the sample's are) get checks too.
    upper = [i for i in ids if i >= "c"]
    assert abs(sum(is_gold_check(i, 0.1) for i in upper) / len(upper) - 0.1) < 0.02


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
