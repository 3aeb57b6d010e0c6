"""What an export adds to a snapshot's lines: the agents' votes behind each label and, for a
label people gave, who gave it and when (`dataset export --format label-studio`).

Each lookup takes a batch of (item id, job id) pairs, the job being the one a snapshot line
names (the job that wrote its current label), and answers in a few queries per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import BATCH_ROWS, T_JOB, T_LABEL, T_REVIEW, T_VOTE

Key = tuple[str, str]  # (item id, job id)
Vote = tuple[str, str, str | None, float | None]  # agent, version, label, confidence
Annotation = tuple[str | None, str, datetime]  # who, label, when


async def agent_votes(
    conn: AsyncConnection, dataset: str, keys: Sequence[Key]
) -> dict[Key, list[Vote]]:
    """The agents' votes behind each label: its job's own, or, for a label without votes of
    its own (a person's, a correction, a rollback), those of the newest job whose agents
    voted on the item in `dataset`. One query per batch of items."""
    v, j = T_VOTE.c, T_JOB.c
    items = sorted({item for item, _ in keys})
    by_job: dict[Key, list[Vote]] = {}
    newest: dict[str, str] = {}  # item -> its newest job with votes
    for start in range(0, len(items), BATCH_ROWS):
        rows = await conn.execute(
            select(v.item_id, v.job_id, v.agent, v.agent_version, v.label, v.confidence)
            .outerjoin(T_JOB, j.id == v.job_id)
            .where(v.dataset == dataset, v.item_id.in_(items[start : start + BATCH_ROWS]))
            .order_by(v.item_id, j.started_at.desc().nulls_last(), v.job_id.desc(), v.agent)
        )
        for item, job, agent, version, label, confidence in rows:
            newest.setdefault(item, job)
            by_job.setdefault((item, job), []).append((agent, version, label, confidence))
    out: dict[Key, list[Vote]] = {}
    for item, job in keys:
        found = by_job.get((item, job)) or by_job.get((item, newest.get(item, "")))
        if found:
            out[(item, job)] = found
    return out


async def human_annotations(
    conn: AsyncConnection, dataset: str, keys: Sequence[Key]
) -> dict[Key, list[Annotation]]:
    """For each label people gave (a review's, a lead's correction, an import's): one entry
    per person the label names, with the label and when they gave it (their newest accepted
    review of the item with that label, up to the label's own time; else the label's time).
    Labels no person gave are left out."""
    lbl, r = T_LABEL.c, T_REVIEW.c
    wanted = set(keys)
    items = sorted({item for item, _ in keys})
    out: dict[Key, list[Annotation]] = {}
    for start in range(0, len(items), BATCH_ROWS):
        batch = items[start : start + BATCH_ROWS]
        labels = await conn.execute(
            select(lbl.item_id, lbl.job_id, lbl.label, lbl.reviewers, lbl.created_at)
            .where(lbl.dataset == dataset, lbl.item_id.in_(batch))
            .where(lbl.source.in_(("human", "import")))
        )
        found = [row for row in labels if (row[0], row[1]) in wanted]
        if not found:
            continue
        given: dict[tuple[str, str, str], list[datetime]] = {}
        reviewed = await conn.execute(
            select(r.item_id, r.reviewer, r.label, r.submitted_at).where(
                r.dataset == dataset,
                r.item_id.in_(sorted({row[0] for row in found})),
                r.accepted.is_(True),
            )
        )
        for item, reviewer, label, at in reviewed:
            given.setdefault((item, reviewer, label), []).append(at)
        for item, job, label, reviewers, created in found:
            entries: list[Annotation] = []
            for who in reviewers or [None]:
                times = [t for t in given.get((item, who, label), []) if t <= created]
                entries.append((who, label, max(times) if times else created))
            out[(item, job)] = entries
    return out
