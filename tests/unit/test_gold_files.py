"""Gold files and gold checks, without the catalog: reading known labels from JSONL and
CSV, and choosing which review tasks check the reviewer (loading into the catalog:
tests/integration/test_gold.py)."""

from __future__ import annotations

import hashlib
import io

from activities.review import is_gold_check
from formats.sources import LabelField, Record, Refusal, read_records

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
