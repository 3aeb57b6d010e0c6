"""Exporting one snapshot version: stream its S3 object version, verify, convert, write.

Memory is bounded whatever the size: the caller downloads the object version to a local
file (a botocore body iterates in fixed-size chunks, not lines), which is read line by line;
rows are converted in batches (BATCH rows per parquet row group, 1000 tasks per Label Studio
vote lookup), and the output goes to a temporary file beside the destination. The content
sha256 is computed over every byte read and compared with the manifest's before the output
is moved into place (or uploaded): a mismatch, or a line that does not parse, leaves nothing
behind and says which hashes. With `rewrite` (the task's `exports` PII mode), each row's text
goes through it before any format is written; the hash still covers the stored bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from formats.snapshot_files import encode

FORMATS = ("jsonl", "parquet", "label-studio")
BATCH = 10_000


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why."""


@dataclass
class ExportResult:
    items: int  # rows written (after the split filter)
    read: int  # rows in the version
    out_sha256: str
    out_bytes: int


# (item id, job id) pairs of a batch -> {pair: [(agent, version, label, confidence)]}
VoteLookup = Callable[[list[tuple[str, str]]], dict[tuple[str, str], list[tuple[Any, ...]]]]
# The same pairs -> {pair: [(who or None, label, when: datetime)]} for labels people gave.
AnnotationLookup = VoteLookup


class _Hashing:
    """Wraps a binary stream; hashes every byte that is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for line in self.raw:
            self.sha.update(line)
            yield line


class _Rewritten(_Hashing):
    """The lines of `inner` (hashed there, as stored) with each row's text through `rewrite`;
    a line whose text it leaves alone is passed on byte for byte."""

    def __init__(self, inner: _Hashing, rewrite: Callable[[str], str]) -> None:
        self.raw, self.sha, self.inner, self.rewrite = inner.raw, inner.sha, inner, rewrite

    def __iter__(self) -> Iterator[bytes]:
        for line in self.inner:
            row = json.loads(line) if line.strip() else None
            text = row.get("text") if isinstance(row, dict) else None
            new = self.rewrite(text) if isinstance(text, str) else text
            if isinstance(row, dict) and new != text:
                row["text"] = new
                yield encode(row)
            else:
                yield line


def export(
    source: IO[bytes],
    *,
    expected_sha256: str,
    fmt: str,
    out: Path,
    split: str | None = None,
    votes: VoteLookup | None = None,
    label_name: str = "label",
    progress: Callable[[int], None] = lambda n: None,
    rewrite: Callable[[str], str] | None = None,
    allow_empty: bool = True,
    annotations: AnnotationLookup | None = None,
) -> ExportResult:
    """Convert a snapshot's JSONL (`source`) into `out` in `fmt`; verify before publishing.
    `rewrite`: what becomes of each text (the task's `exports` PII mode); None keeps it.
    Without `allow_empty`, an export of no items is refused and nothing is written.
    `votes` and `annotations` (Label Studio only) say who labelled what: see `to_label_studio`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    hashing = _Hashing(source)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                lines = hashing if rewrite is None else _Rewritten(hashing, rewrite)
                writer = _WRITERS[fmt]
                if fmt == "label-studio":
                    writer = functools.partial(_label_studio, annotations=annotations)
                counts = writer(lines, fh, split, votes, label_name, progress)
            except (ValueError, KeyError, AttributeError, TypeError) as err:
                # A line that does not parse: say whether the stored bytes were altered.
                for _ in hashing:
                    pass
                if hashing.sha.hexdigest() != expected_sha256:
                    raise ExportError(
                        f"content sha256 mismatch: the manifest says {expected_sha256}, the "
                        f"stored object hashes to {hashing.sha.hexdigest()}; nothing was "
                        "exported"
                    ) from err
                raise ExportError(f"malformed snapshot line: {err}; nothing exported") from err
        got = hashing.sha.hexdigest()
        if got != expected_sha256:
            raise ExportError(
                f"content sha256 mismatch: the manifest says {expected_sha256}, the stored "
                f"object hashes to {got}; nothing was exported"
            )
        if not allow_empty and counts[0] == 0:
            where = f"in split {split!r} of" if split else "in"
            raise ExportError(
                f"no items {where} this version ({counts[1]} in all): nothing was exported, "
                "no file written"
            )
        digest = hashlib.sha256()
        with tmp.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        size = tmp.stat().st_size
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; an export is an ordinary file
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(items=counts[0], read=counts[1], out_sha256=digest.hexdigest(),
                        out_bytes=size)  # fmt: skip


def _keep(row: dict[str, Any], split: str | None) -> bool:
    """`split` None keeps every row; "pool" keeps the rows without a split."""
    return split is None or row.get("split") == (None if split == "pool" else split)


def _rows(lines: _Hashing, split: str | None) -> Iterator[tuple[bool, dict[str, Any]]]:
    for line in lines:
        if line.strip():
            row = json.loads(line)
            yield _keep(row, split), row


def _jsonl(
    lines: _Hashing,
    fh: IO[bytes],
    split: str | None,
    votes: VoteLookup | None,
    label_name: str,
    progress: Callable[[int], None],
) -> tuple[int, int]:
    written = read = 0
    for line in lines:
        if not line.strip():
            continue
        read += 1
        if split is not None and not _keep(json.loads(line), split):
            continue
        fh.write(line)
        written += 1
        if written % 100_000 == 0:
            progress(written)
    return written, read


PARQUET_COLUMNS = ("id", "text", "label", "label_source", "job_id", "split")


def _parquet(
    lines: _Hashing,
    fh: IO[bytes],
    split: str | None,
    votes: VoteLookup | None,
    label_name: str,
    progress: Callable[[int], None],
) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.string()) for c in PARQUET_COLUMNS])
    written = read = 0
    batch: dict[str, list[Any]] = {c: [] for c in PARQUET_COLUMNS}
    with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        for keep, row in _rows(lines, split):
            read += 1
            if not keep:
                continue
            for c in PARQUET_COLUMNS:
                batch[c].append(row.get(c))
            written += 1
            if len(batch["id"]) >= BATCH:
                writer.write_table(pa.table(batch, schema=schema))
                batch = {c: [] for c in PARQUET_COLUMNS}
                progress(written)
        if batch["id"]:
            writer.write_table(pa.table(batch, schema=schema))
    return written, read


def _label_studio(
    lines: _Hashing,
    fh: IO[bytes],
    split: str | None,
    votes: VoteLookup | None,
    label_name: str,
    progress: Callable[[int], None],
    annotations: AnnotationLookup | None = None,
) -> tuple[int, int]:
    """A JSON array of Label Studio tasks, written one task at a time."""
    written = read = 0
    fh.write(b"[")
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal written
        keys = [(r["id"], r["job_id"]) for r in batch]
        found = votes(keys) if votes else {}
        people = annotations(keys) if annotations else {}
        for row in batch:
            key = (row["id"], row["job_id"])
            task = to_label_studio(row, found.get(key, []), label_name, people.get(key))
            fh.write((b",\n" if written else b"\n") + json.dumps(task, ensure_ascii=False).encode())
            written += 1
        batch.clear()
        progress(written)

    for keep, row in _rows(lines, split):
        read += 1
        if keep:
            batch.append(row)
        if len(batch) >= 1000:
            flush()
    if batch:
        flush()
    fh.write(b"\n]\n")
    return written, read


def _choice(label: str, label_name: str) -> list[dict[str, Any]]:
    return [{"from_name": label_name, "to_name": "text", "type": "choices",
             "value": {"choices": [label]}}]  # fmt: skip


def to_label_studio(
    row: dict[str, Any],
    item_votes: list[tuple[Any, ...]],
    label_name: str = "label",
    people: list[tuple[Any, ...]] | None = None,
) -> dict[str, Any]:
    """One Label Studio task: the text, each agent's vote as a prediction (model_version =
    agent@version, score = confidence; for a label people gave, the votes the agents cast on
    the item), and the label as an annotation when people gave it (as a prediction of
    `labelfabric` otherwise), so a team can review it there and return. `people`, for such a
    label: (who, label, when) per person, each its own annotation with `completed_by`
    (`{"email": who}`: Label Studio matches annotators by email, and `dataset import` reads
    it back as the reviewer) and `created_at`."""
    predictions = [
        {"model_version": f"{agent}@{version}", "score": float(conf),
         "result": _choice(label, label_name)}
        for agent, version, label, conf in item_votes
        if label is not None
    ]  # fmt: skip
    task: dict[str, Any] = {
        "data": {"text": row["text"], "item_id": row["id"], "split": row.get("split")},
        "predictions": predictions,
        "meta": {"job_id": row["job_id"], "label_source": row["label_source"]},
    }
    if row["label_source"] in ("human", "import"):
        task["annotations"] = [
            _annotation(label, who, when, label_name) for who, label, when in people or []
        ] or [{"result": _choice(row["label"], label_name)}]
    else:
        predictions.append({"model_version": "labelfabric", "score": 1.0,
                            "result": _choice(row["label"], label_name)})  # fmt: skip
    return task


def _annotation(label: str, who: str | None, when: Any, label_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"result": _choice(label, label_name)}
    if who:
        out["completed_by"] = {"email": who}
    if isinstance(when, datetime):
        at = when if when.tzinfo else when.replace(tzinfo=UTC)
        out["created_at"] = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


_WRITERS: dict[str, Callable[..., tuple[int, int]]] = {
    "jsonl": _jsonl,
    "parquet": _parquet,
    "label-studio": _label_studio,
}
