"""The leakage rule: whether a record's content would leak across splits or held-out datasets.

Shared by ingest (`activities/jobs.py`) and the Label Studio import (`formats/labelstudio.py`);
the caller looks up where the content is already placed.
"""

from __future__ import annotations

from formats.sources import Record


def leak(
    rec: Record,
    seen: dict[bytes, str | None],
    placed: list[tuple[str, str | None]],
    dataset: str,
) -> str | None:
    """Why this record would leak content across splits or held-out datasets, or None.

    Within the dataset an item has one split: a record naming another split than the one the
    item already has (in the catalog, or earlier in this source) leaks. Across a held-out
    relation, any placement of the same content leaks.
    """
    earlier = seen.get(bytes.fromhex(rec.item_id), rec.split)
    if rec.split is not None and earlier is not None and earlier != rec.split:
        return f"content also in split {earlier!r} earlier in this source (leakage)"
    for where, split in placed:
        if where != dataset:
            return f"content also in held-out-related dataset {where!r} ({split or 'pool'})"
        if rec.split is not None and split is not None and split != rec.split:
            return (
                f"content already in split {split!r} of {dataset!r}; this record says "
                f"{rec.split!r} (leakage)"
            )
    return None
