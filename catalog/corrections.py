"""A lead's correction of a closed review, and what the review page reads to decide who may
see an item.

A correction is a new `human` label superseding the item's current one (history stays, as
with every label), named after the label it supersedes (`correct:{dataset}:{item}:{label
id}`): correcting the same label twice writes one row. Its audit event is keyed
`{that name}:closed` and says the label and who gave it, as a review's close event does, so
`audit verify` checks a correction like any human label; it adds the reason and what was
superseded. A correction is refused when the item's label changed since the lead looked,
when the item is under review again, or when no review of it has closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import append_audit
from catalog.engine import BATCH_ROWS, T_ITEM, T_LABEL, T_REVIEW, T_REVIEW_TASK
from catalog.labels import PEOPLE, lock_labels, set_labels

PREFIX = "correct:"


class CorrectionRefused(Exception):
    """The correction cannot be written; the message says why (for the lead)."""


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """What access to an item depends on, and its current label."""

    dataset: str
    item_id: str
    sensitivity: str
    task: str | None  # of its newest review task (None: never routed to people)
    review_state: str | None  # of its newest review task
    label_id: int | None = None
    label: str | None = None
    source: str | None = None
    reviewers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClosedReview:
    dataset: str
    item_id: str
    workflow_id: str
    task: str | None
    sensitivity: str
    closed_at: datetime | None
    agreed: str | None  # what the review agreed on
    label: str | None  # the current label (a correction's, if any)
    source: str | None
    reviewers: tuple[str, ...]


def correction_job_id(dataset: str, item_id: str, supersedes: int) -> str:
    return f"{PREFIX}{dataset}:{item_id}:{supersedes}"


async def item_facts(conn: AsyncConnection, dataset: str, item_id: str) -> ItemFacts | None:
    """None when the catalog has no such item."""
    i, t, lbl = T_ITEM.c, T_REVIEW_TASK.c, T_LABEL.c
    sensitivity = await conn.scalar(
        select(i.sensitivity).where(i.dataset == dataset, i.id == item_id)
    )
    if sensitivity is None:
        return None
    task = (
        await conn.execute(
            select(t.task, t.state)
            .where(t.dataset == dataset, t.item_id == item_id)
            .order_by(t.opened_at.desc())
            .limit(1)
        )
    ).first()
    current = (
        await conn.execute(
            select(lbl.id, lbl.label, lbl.source, lbl.reviewers).where(
                lbl.dataset == dataset, lbl.item_id == item_id, lbl.is_current.is_(True)
            )
        )
    ).first()
    return ItemFacts(
        dataset=dataset,
        item_id=item_id,
        sensitivity=str(sensitivity),
        task=task.task if task else None,
        review_state=task.state if task else None,
        label_id=current.id if current else None,
        label=current.label if current else None,
        source=current.source if current else None,
        reviewers=tuple(current.reviewers or ()) if current else (),
    )


async def access_of(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(dataset, item id) -> (its sensitivity, the task of its newest review task); items
    not in the catalog are left out."""
    i, t = T_ITEM.c, T_REVIEW_TASK.c
    out: dict[tuple[str, str], tuple[str, str | None]] = {}
    by_dataset: dict[str, list[str]] = {}
    for dataset, item_id in keys:
        by_dataset.setdefault(dataset, []).append(item_id)
    for dataset, ids in by_dataset.items():
        for start in range(0, len(ids), BATCH_ROWS):
            rows = await conn.execute(
                select(i.id, i.sensitivity, t.task)
                .outerjoin(T_REVIEW_TASK, and_(t.dataset == i.dataset, t.item_id == i.id))
                .where(i.dataset == dataset, i.id.in_(ids[start : start + BATCH_ROWS]))
                .order_by(i.id, t.opened_at.asc().nulls_first())
            )
            out.update({(dataset, r[0]): (str(r[1]), r[2]) for r in rows})  # newest last
    return out


async def answered_by(
    conn: AsyncConnection, reviewer: str, keys: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (dataset, item id) `reviewer` has answered (accepted) since its open
    review task opened: an item still waiting for another reviewer is not theirs to open."""
    r, t = T_REVIEW.c, T_REVIEW_TASK.c
    out: set[tuple[str, str]] = set()
    by_dataset: dict[str, list[str]] = {}
    for dataset, item_id in keys:
        by_dataset.setdefault(dataset, []).append(item_id)
    for dataset, ids in by_dataset.items():
        for start in range(0, len(ids), BATCH_ROWS):
            rows = await conn.execute(
                select(r.item_id)
                .join(
                    T_REVIEW_TASK,
                    and_(
                        t.dataset == r.dataset,
                        t.item_id == r.item_id,
                        t.workflow_id == r.workflow_id,
                        t.closed_at.is_(None),
                        r.submitted_at >= t.opened_at,
                    ),
                )
                .where(r.dataset == dataset, r.item_id.in_(ids[start : start + BATCH_ROWS]))
                .where(r.reviewer == reviewer, r.accepted.is_(True))
                .distinct()
            )
            out.update((dataset, row[0]) for row in rows)
    return out


async def closed_reviews(
    conn: AsyncConnection,
    *,
    levels: Sequence[str],
    tasks: Sequence[str],
    dataset: str | None = None,
    limit: int = 100,
) -> list[ClosedReview]:
    """The newest reviews that closed with a label, on items of `tasks` whose sensitivity
    is one of `levels` (what the reader is cleared for), with each item's current label."""
    t, i, lbl = T_REVIEW_TASK.c, T_ITEM.c, T_LABEL.c
    query = (
        select(
            t.dataset,
            t.item_id,
            t.workflow_id,
            t.task,
            i.sensitivity,
            t.closed_at,
            t.label,
            lbl.label.label("current"),
            lbl.source,
            lbl.reviewers,
        )
        .join(T_ITEM, and_(i.dataset == t.dataset, i.id == t.item_id))
        .outerjoin(
            T_LABEL,
            and_(lbl.dataset == t.dataset, lbl.item_id == t.item_id, lbl.is_current.is_(True)),
        )
        .where(t.state == "done", t.label.is_not(None))
        .where(i.sensitivity.in_(list(levels)), t.task.in_(list(tasks)))
        .order_by(t.closed_at.desc().nulls_last(), t.item_id)
        .limit(limit)
    )
    if dataset:
        query = query.where(t.dataset == dataset)
    out: dict[tuple[str, str], ClosedReview] = {}  # an item reviewed twice: its newest close
    for r in await conn.execute(query):
        out.setdefault(
            (r.dataset, r.item_id),
            ClosedReview(
                dataset=r.dataset,
                item_id=r.item_id,
                workflow_id=r.workflow_id,
                task=r.task,
                sensitivity=r.sensitivity,
                closed_at=r.closed_at,
                agreed=r.label,
                label=r.current,
                source=r.source,
                reviewers=tuple(r.reviewers or ()),
            ),
        )
    return list(out.values())


async def correct_label(
    conn: AsyncConnection,
    *,
    dataset: str,
    item_id: str,
    label: str,
    reason: str,
    lead: str,
    supersedes: int,
) -> int:
    """Write the lead's label over label `supersedes` (the one the lead saw), in the caller's
    transaction; the new label's id. `CorrectionRefused` says why not."""
    job_id = correction_job_id(dataset, item_id, supersedes)
    await _check_current(conn, dataset, item_id, supersedes, label)
    await set_labels(
        conn,
        dataset=dataset,
        job_id=job_id,
        labels={item_id: label},
        source="human",
        reviewers=[lead],
    )
    new_id = await conn.scalar(
        select(T_LABEL.c.id).where(
            T_LABEL.c.dataset == dataset,
            T_LABEL.c.item_id == item_id,
            T_LABEL.c.job_id == job_id,
            T_LABEL.c.source == "human",
        )
    )
    if new_id is None:  # this very correction was written before (a repeated form)
        raise CorrectionRefused("this correction was made already: reload the page")
    old = (await conn.execute(select(T_LABEL).where(T_LABEL.c.id == supersedes))).one()
    payload: dict[str, Any] = {
        "label": label,
        "reviewers": [lead],
        "reason": reason,
        "dataset": dataset,
        "item_id": item_id,
        "supersedes": {
            "id": supersedes,
            "label": old.label,
            "source": old.source,
            "job_id": old.job_id,
            "reviewers": list(old.reviewers or ()),
        },
    }
    await append_audit(
        conn,
        key=f"{job_id}:closed",  # what `audit verify` joins a human label to
        actor=lead,
        kind=kinds.LABEL_CORRECTED,
        subject=f"review:{dataset}:{item_id}",
        payload=payload,
    )
    return int(new_id)


async def _check_current(
    conn: AsyncConnection, dataset: str, item_id: str, supersedes: int, label: str
) -> None:
    """Under the dataset's label lock (held to the end of the transaction): refuse unless
    label `supersedes` is still current and the item's reviews are closed."""
    await lock_labels(conn, dataset)
    facts = await item_facts(conn, dataset, item_id)
    if facts is None:
        raise CorrectionRefused(f"no item {item_id[:12]} in {dataset}")
    if facts.review_state is None:
        raise CorrectionRefused("no review of this item has closed: nothing to correct")
    if facts.review_state != "done":
        raise CorrectionRefused(
            f"the item's review is {facts.review_state}: correct it once a review has closed"
        )
    if facts.label_id != supersedes:
        raise CorrectionRefused(
            "the item's label changed since you opened the page: reload it and look again"
        )
    if facts.label == label:
        raise CorrectionRefused(f"the item is already labeled {label!r}")


async def overturned(conn: AsyncConnection) -> dict[str, int]:
    """Per reviewer: how many of the people's labels they gave a lead has corrected."""
    new, old = T_LABEL.alias("new"), T_LABEL.alias("old")
    rows = await conn.execute(
        select(old.c.reviewers)
        .join(new, new.c.supersedes_id == old.c.id)
        .where(new.c.job_id.startswith(PREFIX), new.c.source == "human")
        .where(old.c.source.in_(PEOPLE))
    )
    out: dict[str, int] = {}
    for (reviewers,) in rows:
        for who in reviewers or ():
            out[str(who)] = out.get(str(who), 0) + 1
    return out
