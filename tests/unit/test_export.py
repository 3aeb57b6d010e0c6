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
