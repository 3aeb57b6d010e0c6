"""Snapshot rows: a job's snapshot, a dataset's newest, the next version number under the
dataset's snapshot lock, and the per-item changes a version makes. (`catalog.datasets` holds
the queries behind `labelfabric dataset`.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_SNAPSHOT, T_SNAPSHOT_CHANGE, _insert_ignore
from catalog.rows import SnapshotRow


async def snapshot_for_job(conn: AsyncConnection, dataset: str, job_id: str) -> SnapshotRow | None:
    row = (
        await conn.execute(
            select(T_SNAPSHOT).where(T_SNAPSHOT.c.dataset == dataset, T_SNAPSHOT.c.job_id == job_id)
        )
    ).first()
    return None if row is None else SnapshotRow(**row._mapping)


async def latest_snapshot(conn: AsyncConnection, dataset: str) -> SnapshotRow | None:
    row = (
        await conn.execute(
            select(T_SNAPSHOT)
            .where(T_SNAPSHOT.c.dataset == dataset)
            .order_by(T_SNAPSHOT.c.version.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else SnapshotRow(**row._mapping)


async def lock_dataset_snapshots(conn: AsyncConnection, dataset: str) -> None:
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"snapshot:{dataset}"}
    )


async def next_snapshot_version(conn: AsyncConnection, dataset: str) -> int:
    top = await conn.scalar(
        select(func.max(T_SNAPSHOT.c.version)).where(T_SNAPSHOT.c.dataset == dataset)
    )
    return int(top or 0) + 1


async def insert_changes(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    await _insert_ignore(conn, T_SNAPSHOT_CHANGE, rows)


async def insert_snapshot(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(insert(T_SNAPSHOT).values(**row).on_conflict_do_nothing())


async def all_versions(conn: AsyncConnection) -> list[tuple[str, int, str, str, str]]:
    """(dataset, version, s3_key, s3_version_id, content_sha256) of every snapshot, each
    dataset's newest first: what `audit verify` checks in S3."""
    s = T_SNAPSHOT.c
    rows = await conn.execute(
        select(s.dataset, s.version, s.s3_key, s.s3_version_id, s.content_sha256).order_by(
            s.dataset, s.version.desc()
        )
    )
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def newest_manifests(conn: AsyncConnection, limit: int) -> list[tuple[str, int, str, str]]:
    """(dataset, version, manifest_key, manifest_version_id) of the newest `limit` snapshots
    of any dataset: the audit heads they anchor."""
    s = T_SNAPSHOT.c
    rows = await conn.execute(
        select(s.dataset, s.version, s.manifest_key, s.manifest_version_id)
        .order_by(s.created_at.desc())
        .limit(limit)
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]
