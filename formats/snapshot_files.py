"""The snapshot data format: JSON lines sorted by item id, one per labeled item.

    {"id": sha256, "text": ..., "label": ..., "label_source": agent|human|rollback|import,
     "job_id": ..., "split": train|validation|test|null}

Sorted, so two versions are compared by one merge pass in constant memory (`changes`), and a
version's content sha256 is the sha256 of exactly these bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

SPLITS = ("train", "validation", "test")


def encode(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, sort_keys=True).encode() + b"\n"


def read(fh: IO[bytes]) -> Iterator[dict[str, Any]]:
    for raw in fh:
        if raw.strip():
            yield json.loads(raw)


def changes(
    old: Iterable[dict[str, Any]], new: Iterable[dict[str, Any]]
) -> Iterator[tuple[str, str | None, dict[str, Any] | None]]:
    """(item id, old label, new row) for every item added (old label None), removed (new row
    None) or relabelled between two id-sorted versions."""
    olds, news = iter(old), iter(new)
    o, n = next(olds, None), next(news, None)
    while o is not None or n is not None:
        if n is None or (o is not None and o["id"] < n["id"]):
            assert o is not None
            yield o["id"], o["label"], None
            o = next(olds, None)
        elif o is None or n["id"] < o["id"]:
            yield n["id"], None, n
            n = next(news, None)
        else:
            if o["label"] != n["label"]:
                yield n["id"], o["label"], n
            o, n = next(olds, None), next(news, None)


def change_batches(
    dataset: str, version: int, old: IO[bytes] | None, new: IO[bytes], size: int = 5000
) -> Iterator[list[dict[str, Any]]]:
    """`snapshot_change` rows of version `version` against its parent, `size` at a time."""
    batch: list[dict[str, Any]] = []
    for item_id, old_label, row in changes(read(old) if old is not None else (), read(new)):
        batch.append(
            {
                "dataset": dataset,
                "version": version,
                "item_id": item_id,
                "old_label": old_label,
                "new_label": row["label"] if row else None,
                "source": row["label_source"] if row else None,
                "job_id": row["job_id"] if row else None,
            }
        )
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
