"""Label issues: the current labels a verification reads, the issues it records (once per
label version), and the review tasks it queues in the review frontier (rule `label_issue`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_ITEM, T_LABEL, T_LABEL_ISSUE
from catalog.frontier import queue_item_reviews
from catalog.models import utcnow

LABEL_ISSUE_RULE = "label_issue"


class CurrentLabel(NamedTuple):
    label_id: int
    item_id: str
    text: str
    label: str
    source: str  # agent | human | import …


class FlaggedLabel(NamedTuple):
    label_id: int
    item_id: str
    label: str
    suggested: str
    quality: float


async def labels_to_verify(conn: AsyncConnection, dataset: str) -> list[CurrentLabel]:
    """Every current label of the dataset with its item's text, by item id."""
    lbl, item = T_LABEL.c, T_ITEM.c
    rows = await conn.execute(
        select(lbl.id, lbl.item_id, item.text, lbl.label, lbl.source)
        .join(T_ITEM, (item.dataset == lbl.dataset) & (item.id == lbl.item_id))
        .where(lbl.dataset == dataset, lbl.is_current.is_(True))
        .order_by(lbl.item_id)
    )
    return [CurrentLabel(*r) for r in rows]


async def record_label_issues(
    conn: AsyncConnection, dataset: str, verify_id: str, flagged: Sequence[FlaggedLabel]
) -> list[FlaggedLabel]:
    """Record the flagged labels; returns those not flagged before (per label version)."""
    if not flagged:
        return []
    now = utcnow()
    new = await conn.execute(
        insert(T_LABEL_ISSUE)
        .values(
            [
                {
                    "label_id": f.label_id,
                    "dataset": dataset,
                    "item_id": f.item_id,
                    "label": f.label,
                    "suggested": f.suggested,
                    "quality": f.quality,
                    "verify_id": verify_id,
                    "flagged_at": now,
                }
                for f in flagged
            ]
        )
        .on_conflict_do_nothing(index_elements=["label_id"])
        .returning(T_LABEL_ISSUE.c.label_id)
    )
    fresh = {r[0] for r in new}
    return [f for f in flagged if f.label_id in fresh]


async def queue_label_issue_reviews(
    conn: AsyncConnection,
    dataset: str,
    verify_id: str,
    task: str,
    flagged: Sequence[FlaggedLabel],
) -> int:
    """Queue a review of each flagged label (most suspect first: priority 1 - quality) in the
    dataset's review frontier; returns how many were queued (items with no decision to take
    review rules from are left out)."""
    items = [(f.item_id, 1.0 - f.quality) for f in flagged]
    return await queue_item_reviews(conn, dataset, verify_id, task, items, LABEL_ISSUE_RULE)
