"""Source parsing: every malformed record is refused with its line and a reason."""

from __future__ import annotations

import hashlib
import io

import pytest

from activities.sources import (
    MAX_RECORD_BYTES,
    Record,
    Refusal,
    SourceError,
    parse_s3_uri,
    read_records,
    source_format,
)


def parse(raw: bytes, fmt: str = "jsonl", max_chars: int = 100) -> list[Record | Refusal]:
    return list(read_records(io.BytesIO(raw), fmt, text_field="text", max_chars=max_chars))


def test_jsonl_good_and_bad_records_keep_their_line_numbers() -> None:
    raw = b"\n".join(
        [
            b'{"text": "fine review"}',
            b'{"text": ',  # bad JSON
            b'{"other": "x"}',  # missing field
            b'{"text": 42}',  # wrong type
            b'{"text": "   "}',  # empty text
            b'{"text": "' + b"x" * 150 + b'"}',  # over max_chars
            b'{"text": "caf\xe9"}',  # latin-1, not UTF-8
            b"[1, 2]",  # not an object
            b"",  # empty line
            b'{"text": "second fine"}',
        ]
    )
    out = parse(raw)
    good = [r for r in out if isinstance(r, Record)]
    bad = {r.line: r.reason for r in out if isinstance(r, Refusal)}
    assert [(r.line, r.text) for r in good] == [(1, "fine review"), (10, "second fine")]
    assert good[0].item_id == hashlib.sha256(b"fine review").hexdigest()
    assert bad[2].startswith("bad JSON")
    assert bad[3] == "missing field 'text'"
    assert bad[4] == "field 'text' must be a string, got int"
    assert bad[5] == "field 'text' is empty"
    assert "over the task's limit of 100" in bad[6]
    assert bad[7].startswith("not valid UTF-8")
    assert bad[8] == "expected a JSON object, got list"
    assert bad[9] == "empty line"


def test_oversized_record_is_refused_without_parsing() -> None:
    raw = b'{"text": "' + b"y" * (MAX_RECORD_BYTES + 1) + b'"}\n{"text": "ok"}\n'
    out = parse(raw, max_chars=10 * MAX_RECORD_BYTES)
    assert isinstance(out[0], Refusal) and "bytes, over" in out[0].reason
    assert isinstance(out[1], Record) and out[1].line == 2


def test_csv_records_multiline_fields_and_bad_rows() -> None:
    raw = (
        b'text,movie\n"a fine, quoted film",m1\n"spans\ntwo lines",m2\nonly-one-column\n'
        b"caf\xe9 au lait,m3\n,m4\n"
    )
    out = parse(raw, fmt="csv")
    good = [(r.line, r.text) for r in out if isinstance(r, Record)]
    bad = {r.line: r.reason for r in out if isinstance(r, Refusal)}
    assert good == [(2, "a fine, quoted film"), (3, "spans\ntwo lines")]
    assert bad[5] == "expected 2 columns, got 1"
    assert bad[6].startswith("not valid UTF-8")
    assert bad[7] == "field 'text' is empty"


def test_csv_without_the_text_column_names_the_columns() -> None:
    with pytest.raises(SourceError, match=r"no column 'text' \(columns: body, movie\)"):
        parse(b"body,movie\nx,y\n", fmt="csv")


@pytest.mark.parametrize("source", ["data.txt", "data", "s3://b/k.parquet"])
def test_unknown_format_is_refused(source: str) -> None:
    with pytest.raises(SourceError, match="unsupported source format"):
        source_format(source)


def test_s3_uri() -> None:
    assert parse_s3_uri("s3://bucket/a/b.jsonl") == ("bucket", "a/b.jsonl")
    with pytest.raises(SourceError, match="malformed S3 uri"):
        parse_s3_uri("s3://bucket-only")
