"""Reading and validating a labeling source (JSONL or CSV, local path or s3:// object).

A record is refused with its line number and a reason a person can act on; a refused record
never stops the job. Item identity is the sha256 of the text, so a record repeated in the
source is labeled once.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAX_RECORD_BYTES = 1 << 20  # one record over 1 MiB is refused, not loaded
BOM = b"\xef\xbb\xbf"
# A CSV field may be as large as a record (the csv module's default stops at 128 KiB). The
# limit is process-wide; nothing else in a worker reads CSV.
csv.field_size_limit(MAX_RECORD_BYTES)
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}


class SourceError(ValueError):
    """The source as a whole cannot be read (unknown format, missing, unreadable)."""


@dataclass(frozen=True, slots=True)
class Record:
    line: int
    item_id: str
    text: str
    label: str | None = None  # read only when a label field is asked for (gold files)
    split: str | None = None  # train | validation | test; None = the unlabelled pool


@dataclass(frozen=True, slots=True)
class Refusal:
    line: int
    reason: str
    excerpt: str


def source_format(source: str) -> str:
    suffix = Path(source.split("?", 1)[0]).suffix.lower()
    if suffix not in FORMATS:
        raise SourceError(
            f"unsupported source format {suffix or '(none)'!r} for {source}: "
            f"use one of {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[suffix]


VERSION_MARK = "?versionId="


def s3_version(uri: str) -> tuple[str, str | None]:
    """`s3://bucket/key?versionId=V` -> (`s3://bucket/key`, V); a uri without one -> (uri,
    None). A watcher's jobs name the exact object version they label this way."""
    base, mark, version = uri.rpartition(VERSION_MARK)
    if not mark:
        return uri, None
    if not version or not base.startswith("s3://"):
        raise SourceError(f"malformed S3 uri {uri!r}: expected s3://bucket/key?versionId=V")
    return base, version


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key` (a `?versionId=` is not part of the key)."""
    rest = s3_version(uri)[0].removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise SourceError(f"malformed S3 uri {uri!r}: expected s3://bucket/key")
    return bucket, key


def clean(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters and made storable: a NUL or a lone surrogate (which
    PostgreSQL refuses) becomes U+FFFD, so an excerpt of a bad record can always be kept."""
    cut = text[:limit].replace("\x00", "\ufffd")
    return cut.encode("utf-8", errors="replace").decode("utf-8")


def _excerpt(raw: bytes) -> str:
    return clean(raw[:200].decode("utf-8", errors="replace"))


def _check_text(value: object, field: str, max_chars: int) -> str | None:
    """The reason a text value is refused, or None when it is acceptable."""
    if not isinstance(value, str):
        return f"field {field!r} must be a string, got {type(value).__name__}"
    if not value.strip():
        return f"field {field!r} is empty"
    if len(value) > max_chars:
        return f"field {field!r} has {len(value)} characters, over the task's limit of {max_chars}"
    nul = value.find("\x00")
    if nul >= 0:
        return f"field {field!r} has a NUL character (U+0000) at character {nul}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return (
            f"field {field!r} has a lone surrogate (U+{ord(value[err.start]):04X}) at "
            f"character {err.start}: not valid Unicode text"
        )
    return None


def _lines(stream: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, the line with its ending) for each line of `stream`; None in place of
    a line over `limit` bytes, which is skipped in pieces, never held in memory whole."""
    line_no = 0
    while True:
        raw = stream.readline(limit + 1)
        if not raw:
            return
        line_no += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(1 << 16)
            yield line_no, None
            continue
        yield line_no, raw


@dataclass(frozen=True, slots=True)
class LabelField:
    """Read a label from this field too; it must be one of `labels`."""

    name: str
    labels: Sequence[str]

    def refusal(self, value: object) -> str | None:
        if value in self.labels:
            return None
        return f"field {self.name!r} is {value!r}, not one of {', '.join(self.labels)}"


def read_records(
    stream: IO[bytes],
    fmt: str,
    *,
    text_field: str,
    max_chars: int,
    label_field: LabelField | None = None,
) -> Iterator[Record | Refusal]:
    reader = _read_jsonl if fmt == "jsonl" else _read_csv
    yield from reader(stream, text_field, max_chars, label_field)


SPLIT_FIELD = "split"
SPLITS = ("train", "validation", "test")


def _bad_split(split: object) -> str:
    return f"split {split!r} is not one of {', '.join(SPLITS)} (or empty for the pool)"


def _read_jsonl(
    stream: IO[bytes], field: str, max_chars: int, label_field: LabelField | None
) -> Iterator[Record | Refusal]:
    for line_no, raw in _lines(stream, MAX_RECORD_BYTES):
        if raw is None:
            yield Refusal(line_no, f"record over {MAX_RECORD_BYTES} bytes", "")
            continue
        body = raw.rstrip(b"\r\n")
        if line_no == 1:
            body = body.removeprefix(BOM)
        if not body.strip():
            yield Refusal(line_no, "empty line", "")
            continue
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError as err:
            yield Refusal(line_no, f"not valid UTF-8 at byte {err.start}", _excerpt(body))
            continue
        try:
            obj = json.loads(decoded)
        except json.JSONDecodeError as err:
            yield Refusal(line_no, f"bad JSON: {err.msg} at column {err.colno}", _excerpt(body))
            continue
        except RecursionError:
            yield Refusal(line_no, "bad JSON: nested too deeply", _excerpt(body))
            continue
        except ValueError as err:  # e.g. an integer over Python's 4300-digit limit
            yield Refusal(line_no, f"bad JSON: {str(err)[:120]}", _excerpt(body))
            continue
        if not isinstance(obj, dict):
            yield Refusal(
                line_no, f"expected a JSON object, got {type(obj).__name__}", _excerpt(body)
            )
            continue
        if field not in obj:
            yield Refusal(line_no, f"missing field {field!r}", _excerpt(body))
            continue
        reason = _check_text(obj[field], field, max_chars)
        label = obj.get(label_field.name) if label_field else None
        if not reason and label_field:
            reason = label_field.refusal(label)
        if reason:
            yield Refusal(line_no, reason, _excerpt(body))
            continue
        split = obj.get(SPLIT_FIELD) or None
        if split is not None and split not in SPLITS:
            yield Refusal(line_no, _bad_split(split), _excerpt(body))
            continue
        text = obj[field]
        yield Record(line_no, hashlib.sha256(text.encode()).hexdigest(), text, label, split)


def _csv_lines(stream: IO[bytes], oversized: set[int]) -> Iterator[str]:
    """Lines for `csv.reader`, each read bounded; an oversized line is replaced by an empty
    one (its number noted in `oversized`), so line numbers stay true. Undecodable bytes are
    kept as lone surrogates (surrogateescape) so that record alone is refused."""
    for line_no, raw in _lines(stream, MAX_RECORD_BYTES):
        if raw is None:
            oversized.add(line_no)
            yield "\n"
            continue
        if line_no == 1:
            raw = raw.removeprefix(BOM)  # Excel writes one before the header
        yield raw.decode("utf-8", errors="surrogateescape")


def _read_csv(
    stream: IO[bytes], field: str, max_chars: int, label_field: LabelField | None
) -> Iterator[Record | Refusal]:
    oversized: set[int] = set()
    reader = csv.reader(_csv_lines(stream, oversized))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        raise SourceError(f"CSV header does not parse: {err}") from err
    header = [clean(h, 200) for h in header]
    if field not in header:
        raise SourceError(f"CSV header has no column {field!r} (columns: {', '.join(header)})")
    col = header.index(field)
    if label_field and label_field.name not in header:
        raise SourceError(
            f"CSV header has no column {label_field.name!r} (columns: {', '.join(header)})"
        )
    label_col = header.index(label_field.name) if label_field else None
    split_col = header.index(SPLIT_FIELD) if SPLIT_FIELD in header else None
    while True:
        line_no = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            # The reader starts afresh at the next line: one bad record, not a bad file.
            yield Refusal(line_no, f"bad CSV: {err}", "")
            continue
        if line_no in oversized:
            yield Refusal(line_no, f"record over {MAX_RECORD_BYTES} bytes", "")
            continue
        joined = ",".join(row)
        if not row or not joined.strip():
            yield Refusal(line_no, "empty line", "")
            continue
        if len(joined.encode("utf-8", errors="surrogateescape")) > MAX_RECORD_BYTES:
            yield Refusal(line_no, f"record over {MAX_RECORD_BYTES} bytes", "")
            continue
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError as err:
            bad = joined.encode("utf-8", errors="surrogateescape")
            yield Refusal(line_no, f"not valid UTF-8 at character {err.start}", _excerpt(bad))
            continue
        if len(row) != len(header):
            yield Refusal(line_no, f"expected {len(header)} columns, got {len(row)}", clean(joined))
            continue
        reason = _check_text(row[col], field, max_chars)
        label = row[label_col] if label_col is not None else None
        if not reason and label_field:
            reason = label_field.refusal(label)
        if reason:
            yield Refusal(line_no, reason, clean(joined))
            continue
        split = (row[split_col] if split_col is not None else "") or None
        if split is not None and split not in SPLITS:
            yield Refusal(line_no, _bad_split(split), clean(joined))
            continue
        text = row[col]
        yield Record(line_no, hashlib.sha256(text.encode()).hexdigest(), text, label, split)
