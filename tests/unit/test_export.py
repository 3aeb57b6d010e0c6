"""Export without a stack: formats, split filters, and refusing altered or malformed data."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from formats import snapshot_files
from formats.export import ExportError, export

ROWS = [
    {"id": f"{i:064x}", "text": f"text {i}", "label": "positive" if i % 3 else "negative",
     "label_source": "human" if i % 4 == 0 else "agent", "job_id": "label:d:j",
     "split": [None, "train", "test"][i % 3]}
    for i in range(30)
]  # fmt: skip


def data() -> bytes:
    return b"".join(snapshot_files.encode(r) for r in ROWS)


def run(tmp_path: Path, fmt: str, split: str | None = None, body: bytes | None = None) -> Path:
    raw = data() if body is None else body
    out = tmp_path / f"out.{fmt}"
    export(io.BytesIO(raw), expected_sha256=hashlib.sha256(data()).hexdigest(), fmt=fmt,
           out=out, split=split, votes=lambda keys: {k: [("kw", "1", "positive", 0.8)]
                                                      for k in keys})  # fmt: skip
    return out


def test_jsonl_is_byte_identical_and_splits_filter(tmp_path: Path) -> None:
    assert run(tmp_path, "jsonl").read_bytes() == data()
    assert stat.S_IMODE(os.stat(tmp_path / "out.jsonl").st_mode) & 0o044  # readable by others
    test = [json.loads(x) for x in run(tmp_path, "jsonl", "test").read_text().splitlines()]
    assert [r["id"] for r in test] == [r["id"] for r in ROWS if r["split"] == "test"]
    pool = [json.loads(x) for x in run(tmp_path, "jsonl", "pool").read_text().splitlines()]
    assert [r["id"] for r in pool] == [r["id"] for r in ROWS if r["split"] is None]


def test_parquet_and_label_studio(tmp_path: Path) -> None:
    table = pq.read_table(run(tmp_path, "parquet")).to_pylist()
    assert table == [{k: r[k] for k in table[0]} for r in ROWS]
    tasks = json.loads(run(tmp_path, "label-studio", "train").read_text())
    assert len(tasks) == sum(r["split"] == "train" for r in ROWS)
    for task, row in zip(tasks, [r for r in ROWS if r["split"] == "train"], strict=True):
        assert task["data"]["item_id"] == row["id"]
        assert task["predictions"][0] == {
            "model_version": "kw@1", "score": 0.8,
            "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                        "value": {"choices": ["positive"]}}],
        }  # fmt: skip
        human = row["label_source"] == "human"
        assert ("annotations" in task) is human


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "label-studio"])
def test_altered_or_malformed_content_exports_nothing(tmp_path: Path, fmt: str) -> None:
    altered = data().replace(b"text 7", b"text 8")
    with pytest.raises(ExportError, match="content sha256 mismatch"):
        run(tmp_path, fmt, body=altered)
    broken = data() + b"not json\n"
    with pytest.raises(ExportError, match="content sha256 mismatch"):
        run(tmp_path, fmt, body=broken)
    assert list(tmp_path.iterdir()) == []


def test_label_studio_carries_agents_and_people_for_human_labels(tmp_path: Path) -> None:
    """A label people gave: the agents' votes as predictions too, and one annotation per
    person with `completed_by` and `created_at`, which `dataset import` reads back as is."""
    from datetime import UTC, datetime

    from formats import labelstudio

    when = datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC)
    human = [r for r in ROWS if r["label_source"] == "human"]

    def people(keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[object, ...]]]:
        return {k: [("alice", "negative", when), ("bob", "negative", when)] for k in keys}

    out = tmp_path / "ls.json"
    export(io.BytesIO(data()), expected_sha256=hashlib.sha256(data()).hexdigest(),
           fmt="label-studio", out=out,
           votes=lambda keys: {k: [("kw", "1", "positive", 0.8)] for k in keys},
           annotations=people)  # fmt: skip
    tasks = {t["data"]["item_id"]: t for t in json.loads(out.read_text())}
    for row in human:
        task = tasks[row["id"]]
        assert [p["model_version"] for p in task["predictions"]] == ["kw@1"]  # no fallback
        assert [(a["completed_by"], a["created_at"]) for a in task["annotations"]] == [
            ({"email": "alice"}, "2026-11-28T10:00:05Z"),
            ({"email": "bob"}, "2026-11-28T10:00:05Z"),
        ]
        assert task["annotations"][0]["result"][0]["value"] == {"choices": ["negative"]}
    agent = next(r for r in ROWS if r["label_source"] == "agent")
    assert "annotations" not in tasks[agent["id"]]  # an agent's label: a prediction only
    assert tasks[agent["id"]]["predictions"][-1]["model_version"] == "labelfabric"

    (tmp_path / "in.json").write_text(json.dumps([tasks[human[0]["id"]]]))
    back = labelstudio.parse(tmp_path / "in.json", dataset="d", job_id="import:d:x",
                             labels=("positive", "negative"), text_field="text")  # fmt: skip
    assert [(r["reviewer"], r["label"], r["submitted_at"]) for r in back.reviews] == [
        ("alice", "negative", when),
        ("bob", "negative", when),
    ]
    assert [v["agent"] for v in back.votes] == ["label_studio:kw"]
