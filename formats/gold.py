"""Known labels for gold checks on reviewers: `labelfabric review gold FILE --task T`.

A gold file is JSONL or CSV with the task's text field and a label field. It loads whole or
not at all: one bad record (no label, a label outside the task's labels, the same text with
two labels) refuses the file, naming every bad line, and nothing is written. A load is one
transaction with an audit event that names the file and its sha256.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from formats.sources import LabelField, Record, Refusal, read_records, source_format

if TYPE_CHECKING:
    from agents.tasks import TaskSpec


class GoldError(Exception):
    """The gold file as a whole cannot be read."""


@dataclass
class GoldLoad:
    loaded: int = 0  # distinct items with a known label now in the catalog
    repeated: int = 0  # records repeating an earlier one, label and all
    sha256: str = ""
    records: list[Record] = field(default_factory=list)  # one per item, first occurrence
    refused: list[Refusal] = field(default_factory=list)


def read_gold(task: TaskSpec, path: Path, *, label_field: str = "label") -> GoldLoad:
    """Read and check a gold file; `refused` lists every bad line."""
    if not path.is_file():
        raise GoldError(f"gold file {path} does not exist")
    fmt = source_format(str(path))
    data = path.read_bytes()
    out = GoldLoad(sha256=hashlib.sha256(data).hexdigest())
    seen: dict[str, Record] = {}
    for rec in read_records(
        io.BytesIO(data),
        fmt,
        text_field=task.text_field,
        max_chars=task.max_chars,
        label_field=LabelField(label_field, task.labels),
    ):
        if isinstance(rec, Refusal):
            out.refused.append(rec)
        elif rec.item_id not in seen:
            seen[rec.item_id] = rec
        elif seen[rec.item_id].label == rec.label:
            out.repeated += 1
        else:
            first = seen[rec.item_id]
            out.refused.append(
                Refusal(
                    rec.line,
                    f"same text as line {first.line} with another label "
                    f"({rec.label!r} here, {first.label!r} there)",
                    rec.text[:200],
                )
            )
    out.records = list(seen.values())
    out.loaded = len(out.records)
    return out
