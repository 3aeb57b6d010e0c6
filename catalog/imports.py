"""Labels made elsewhere (a Label Studio export): one completed job per imported file, its
items, the predictions as votes, the annotations as reviews, the labels current, and one
`import` audit event.

Two steps in the caller's one transaction: `import_check` reads what the import depends on
(the dataset's newest version, whether this file's job exists, where its items already sit
among the dataset and its held-out relatives); the caller refuses the items that would leak
(`formats.labelstudio.drop_leaks`, pure code) and `record_import` writes the rest. The job id
derives from the file's sha256, so a second import of the same file records nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import append_audit
from catalog.datasets import placements, related, versions
from catalog.jobs import assign_splits, create_job, job, record_chunk, record_ingest
from catalog.labels import set_labels
from catalog.reviews import record_reviews

IMPORT_POLICY = "label_studio_import"  # the policy id an import's job row names


class ImportCheck(NamedTuple):
    latest: int  # the dataset's newest version (0: none yet)
    done: bool  # this job (file) was imported before: record nothing
    placements: dict[str, list[tuple[str, str | None]]]  # item -> (dataset, split) it sits in


async def import_check(
    conn: AsyncConnection, dataset: str, job_id: str, item_ids: Sequence[str]
) -> ImportCheck:
    """The newest version, whether job_id exists already, and (when it does not) where the
    items already sit among the dataset and the datasets held out for it or it for."""
    rows = await versions(conn, dataset)
    latest = rows[-1].version if rows else 0
    if await job(conn, job_id) is not None:
        return ImportCheck(latest, True, {})
    guarded = [dataset, *await related(conn, dataset)]
    return ImportCheck(latest, False, await placements(conn, guarded, item_ids))


async def record_import(
    conn: AsyncConnection,
    *,
    dataset: str,
    task: str,
    job_id: str,
    sha256: str,
    source: str,
    items: Sequence[Mapping[str, Any]],
    votes: Sequence[Mapping[str, Any]],
    reviews: Sequence[Mapping[str, Any]],
    labels: Mapping[str, tuple[str, Sequence[str]]],
    refused: Sequence[Mapping[str, Any]],
    agents: Iterable[str],
    actor: str,
) -> None:
    """Record one imported file as the completed job `job_id`: its items (with their splits),
    refused tasks, votes, reviews and labels (item -> (label, reviewers)), and the audit
    event. `sha256` is the file's, `source` where it was read from."""
    await create_job(conn, {
        "id": job_id, "dataset": dataset, "task": task, "source": source,
        "policy_id": IMPORT_POLICY, "policy_version": 0, "policy_sha256": sha256,
        "agents": sorted(agents), "status": "completed", "items": len(items),
        "duplicates": 0, "quarantined": len(refused),
    })  # fmt: skip
    job_items = [{"job_id": job_id, "ordinal": n, "item_id": item["id"]}
                 for n, item in enumerate(items)]  # fmt: skip
    await record_ingest(conn, job_id=job_id, items=items, job_items=job_items,
                        rejected=[{**r, "job_id": job_id} for r in refused])  # fmt: skip
    await record_chunk(conn, dataset=dataset, job_id=job_id, votes=votes, decisions=[],
                       accepted={})  # fmt: skip
    await record_reviews(conn, reviews)
    await assign_splits(conn, dataset, {i["id"]: i["split"] for i in items if i["split"]})
    groups: dict[tuple[str, ...], dict[str, str]] = {}
    for item_id, (label, who) in labels.items():
        groups.setdefault(tuple(who), {})[item_id] = label
    for who, chosen in groups.items():
        await set_labels(conn, dataset=dataset, job_id=job_id, labels=chosen, source="import",
                         reviewers=list(who))  # fmt: skip
    await append_audit(
        conn, key=f"{job_id}:imported", actor=actor, kind=kinds.IMPORT,
        subject=f"dataset:{dataset}",
        payload={"source": source, "sha256": sha256, "items": len(items),
                 "labels": len(labels), "refused": len(refused)},
    )  # fmt: skip
