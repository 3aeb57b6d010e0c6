"""The ingest leakage rule, without a stack (the stack path is in test_provenance.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agents.tasks import TaskError, load_task
from formats.leakage import leak as _leak
from formats.sources import Record


def rec(text: str, split: str | None, line: int = 1) -> Record:
    return Record(line, hashlib.sha256(text.encode()).hexdigest(), text, None, split)


def test_leak_rules() -> None:
    r = rec("a", "test")
    digest = bytes.fromhex(r.item_id)
    assert _leak(r, {}, [], "d") is None
    assert _leak(r, {digest: "train"}, [], "d") == (
        "content also in split 'train' earlier in this source (leakage)"
    )
    assert _leak(r, {digest: None}, [], "d") is None  # a pool duplicate: not a leak
    assert _leak(r, {}, [("d", "test")], "d") is None  # the same split again
    assert _leak(r, {}, [("d", None)], "d") is None  # a pool item takes the split
    assert "already in split 'validation' of 'd'" in (
        _leak(r, {}, [("d", "validation")], "d") or ""
    )
    assert _leak(rec("a", None), {}, [("d", "train")], "d") is None  # the record names none
    assert _leak(rec("a", None), {}, [("held", None)], "d") == (
        "content also in held-out-related dataset 'held' (pool)"
    )


def test_task_leakage_setting(tmp_path: Path) -> None:
    src = (Path(__file__).resolve().parents[2] / "tasks" / "sentiment.yaml").read_text()
    (tmp_path / "sentiment_seed.jsonl").write_text("")
    (tmp_path / "sentiment.yaml").write_text(src + "leakage: refuse\n")
    assert load_task(tmp_path, "sentiment").leakage == "refuse"
    (tmp_path / "sentiment.yaml").write_text(src + "leakage: ignore\n")
    with pytest.raises(TaskError, match="'leakage' must be quarantine or refuse"):
        load_task(tmp_path, "sentiment")
