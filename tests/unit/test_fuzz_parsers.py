"""The fuzz harness's first half: generated records, CSV rows and dataset names against the
parsers alone (no servers). The same strategies drive real jobs and reviews in
`tests/integration/test_fuzz.py`."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.payloads import LabelDatasetInput, dataset_name_problem
from formats.sources import Record, Refusal, SourceError, read_records
from tests.fuzzing import ANY_CHAR, LINES, NASTY_TEXT, examples


@settings(max_examples=examples(300), deadline=None)
@given(lines=LINES)
def test_every_jsonl_line_is_a_record_or_a_refusal(lines: list[bytes]) -> None:
    raw = b"\n".join(lines) + b"\n"
    out = list(read_records(io.BytesIO(raw), "jsonl", text_field="text", max_chars=10_000))
    assert sorted(r.line for r in out) == list(range(1, len(lines) + 1))
    for r in out:
        if isinstance(r, Record):
            assert "\x00" not in r.text
            r.text.encode("utf-8")  # storable
        else:
            assert "\x00" not in r.excerpt
            r.excerpt.encode("utf-8")


@settings(max_examples=examples(300), deadline=None)
@given(rows=st.lists(st.lists(NASTY_TEXT, min_size=1, max_size=3), min_size=1, max_size=20))
def test_csv_never_raises_past_its_header(rows: list[list[str]]) -> None:
    buf = io.StringIO()
    import csv

    csv.writer(buf).writerows([["text", "n"], *rows])
    raw = buf.getvalue().encode("utf-8", errors="surrogatepass")
    try:
        out = list(read_records(io.BytesIO(raw), "csv", text_field="text", max_chars=10_000))
    except SourceError:
        return
    for r in out:
        if isinstance(r, Record):
            assert "\x00" not in r.text
            r.text.encode("utf-8")
        else:
            assert isinstance(r, Refusal) and r.line >= 2


@settings(max_examples=examples(500), deadline=None)
@given(name=st.text(ANY_CHAR, max_size=80))
def test_dataset_names_are_valid_or_refused_by_name(name: str) -> None:
    problem = dataset_name_problem(name)
    if problem is None:
        assert ".." not in name and "/" not in name and ":" not in name and name.isascii()
        LabelDatasetInput(dataset=name, source="/s.jsonl", task="t")
    else:
        with pytest.raises(ValueError, match="dataset name"):
            LabelDatasetInput(dataset=name, source="/s.jsonl", task="t")


# --- through the real stack ---------------------------------------------------------------
