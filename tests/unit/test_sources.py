"""Source parsing: every malformed record is refused with its line and a reason."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from activities.sources import SourceForbidden, SourceNotFound, SourceUnreadable, open_local
from formats.sources import (
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
    assert isinstance(out[0], Refusal) and out[0].reason == f"record over {MAX_RECORD_BYTES} bytes"
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


# --- hostile records: each refused alone, with its line, never stalling the rest -----------


def test_records_the_catalog_could_not_store_are_refused_alone() -> None:
    deep = b'{"text": "x", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    raw = b"\n".join(
        [
            b'{"text": "raw nul \x00 byte"}',
            b'{"text": "escaped nul \\u0000 here"}',
            b'{"text": "lone surrogate \\ud800 here"}',
            deep,
            b'{"text": "big number", "n": ' + b"9" * 5000 + b"}",
            b'{"text": "still fine"}',
        ]
    )
    out = parse(raw)
    bad = {r.line: r.reason for r in out if isinstance(r, Refusal)}
    assert [(r.line, r.text) for r in out if isinstance(r, Record)] == [(6, "still fine")]
    assert bad[1].startswith("bad JSON: Invalid control character")
    assert bad[2] == "field 'text' has a NUL character (U+0000) at character 12"
    assert bad[3].startswith("field 'text' has a lone surrogate (U+D800) at character 15")
    assert bad[4] == "bad JSON: nested too deeply"
    assert bad[5].startswith("bad JSON: Exceeds the limit")
    # Every excerpt can be stored: no NUL, no lone surrogate.
    for r in out:
        if isinstance(r, Refusal):
            assert "\x00" not in r.excerpt
            r.excerpt.encode("utf-8")


class _EndlessLine(io.RawIOBase):
    """`size` bytes of one line, made on demand; records the largest single read."""

    def __init__(self, size: int, tail: bytes) -> None:
        self.left, self.tail, self.largest = size, tail, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.left) if self.left else min(len(buf), len(self.tail))
        if self.left:
            buf[:n] = b"y" * n
            self.left -= n
        else:
            buf[:n], self.tail = self.tail[:n], self.tail[n:]
        self.largest = max(self.largest, n)
        return n


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_huge_line_is_skipped_without_holding_it(fmt: str) -> None:
    head = b"text\n" if fmt == "csv" else b""
    tail = b"\n" + (b"after\n" if fmt == "csv" else b'{"text": "after"}\n')
    raw = _EndlessLine(64 * MAX_RECORD_BYTES, tail)  # 64 MiB with no newline
    stream = io.BufferedReader(io.BufferedReader(raw))
    body = io.BytesIO(head) if head else None
    src = stream if body is None else io.BufferedReader(_Chain(body, stream))  # type: ignore[arg-type]
    out = list(read_records(src, fmt, text_field="text", max_chars=10))
    refused = [r for r in out if isinstance(r, Refusal)]
    assert [r.text for r in out if isinstance(r, Record)] == ["after"]
    assert len(refused) == 1 and "over 1048576 bytes" in refused[0].reason
    assert raw.largest <= 1 << 17  # read in pieces, never the whole line


class _Chain(io.RawIOBase):
    def __init__(self, *parts: io.BufferedIOBase | io.BytesIO) -> None:
        self.parts = list(parts)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        while self.parts:
            got = self.parts[0].read(len(buf))
            if got:
                buf[: len(got)] = got
                return len(got)
            self.parts.pop(0)
        return 0


def test_excel_csv_with_bom_and_a_large_field() -> None:
    big = "z" * (300 * 1024)  # over the csv module's 128 KiB default, under 1 MiB
    raw = ("\ufefftext,movie\n" + f'"{big}",m1\n' + "ok,m2\n" + "nul\x00inside,m3\n").encode()
    out = parse(raw, fmt="csv", max_chars=MAX_RECORD_BYTES)
    good = [(r.line, len(r.text)) for r in out if isinstance(r, Record)]
    bad = {r.line: r.reason for r in out if isinstance(r, Refusal)}
    assert good == [(2, len(big)), (3, 2)]
    assert bad[4].startswith("field 'text' has a NUL character")


def test_local_sources_are_regular_files_under_a_root(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    good = root / "a.jsonl"
    good.write_text('{"text": "x"}\n')
    with open_local(str(good), [root]) as fh:
        assert fh.read() == b'{"text": "x"}\n'
    outside = tmp_path / "secret.jsonl"
    outside.write_text("key")
    with pytest.raises(SourceForbidden, match="outside the workers' source roots"):
        open_local(str(outside), [root])
    link = root / "link.jsonl"
    link.symlink_to(outside)
    with pytest.raises(SourceForbidden, match="outside"):
        open_local(str(link), [root])
    fifo = root / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(SourceForbidden, match="not a regular file"):
        open_local(str(fifo), [root])  # refused at once, not blocked on a writer
    with pytest.raises(SourceNotFound):
        open_local(str(root / "missing.jsonl"), [root])
    with pytest.raises(SourceForbidden, match="absolute"):
        open_local("a.jsonl", [root])


def test_an_unreadable_source_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, which reads any file: the refusal the kernel gives others is staged.
    path = tmp_path / "locked.jsonl"
    path.write_text("x")

    def denied(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(SourceUnreadable, match="not readable by the worker"):
        open_local(str(path), [tmp_path])
