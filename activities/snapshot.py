"""`snapshot`: a dataset's current labels as JSONL plus a manifest, as new S3 object versions.

A dataset's labels live at one key; every snapshot is a new object version, and the catalog
row maps `dataset@N` to the S3 version ids. Idempotent: a job gets one snapshot row, and a
retry after the upload but before the row reuses the object version this job already wrote
(found by its metadata), so no orphan versions pile up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.payloads import SnapshotInput, SnapshotRef
from activities.s3 import S3Client, put_once
from catalog import db


def data_key(dataset: str) -> str:
    return f"datasets/{dataset}/labels.jsonl"


def manifest_key(dataset: str) -> str:
    return f"datasets/{dataset}/manifest.json"


@dataclass
class SnapshotActivities:
    engine: AsyncEngine
    s3: S3Client
    bucket: str

    @activity.defn(name="snapshot")
    async def snapshot(self, inp: SnapshotInput) -> SnapshotRef:
        async with self.engine.connect() as conn:
            existing = await db.snapshot_for_job(conn, inp.dataset, inp.job_id)
        if existing is not None:
            return _ref(existing)

        with tempfile.TemporaryFile() as body:
            content_sha, count, distribution, job_ids = await self._write_labels(inp.dataset, body)
            try:
                data_version = await asyncio.to_thread(
                    self._put_once,
                    data_key(inp.dataset),
                    body,
                    inp.job_id,
                    content_sha,
                    "application/x-ndjson",
                )
                async with self.engine.begin() as conn:
                    # One snapshot writer per dataset at a time keeps version numbers dense.
                    await db.lock_dataset_snapshots(conn, inp.dataset)
                    existing = await db.snapshot_for_job(conn, inp.dataset, inp.job_id)
                    if existing is not None:
                        return _ref(existing)
                    parent = await db.latest_snapshot(conn, inp.dataset)
                    version = await db.next_snapshot_version(conn, inp.dataset)
                    provenance = await db.job_agents_and_policies(conn, job_ids)
                    manifest = {
                        "dataset": inp.dataset,
                        "version": version,
                        "parent": None
                        if parent is None
                        else {"version": parent.version, "s3_version_id": parent.s3_version_id},
                        "data": {
                            "bucket": self.bucket,
                            "key": data_key(inp.dataset),
                            "s3_version_id": data_version,
                            "format": "jsonl",
                        },
                        "content_sha256": content_sha,
                        "item_count": count,
                        "label_distribution": dict(sorted(distribution.items())),
                        "job_ids": sorted(job_ids),
                        "created_by_job": inp.job_id,
                        **provenance,
                        "gate": None,
                    }
                    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
                    manifest_sha = hashlib.sha256(raw).hexdigest()
                    manifest_version = await asyncio.to_thread(
                        self._put_once,
                        manifest_key(inp.dataset),
                        raw,
                        inp.job_id,
                        manifest_sha,
                        "application/json",
                    )
                    row = {
                        "dataset": inp.dataset,
                        "version": version,
                        "job_id": inp.job_id,
                        "s3_key": data_key(inp.dataset),
                        "s3_version_id": data_version,
                        "manifest_key": manifest_key(inp.dataset),
                        "manifest_version_id": manifest_version,
                        "manifest_sha256": manifest_sha,
                        "content_sha256": content_sha,
                        "item_count": count,
                        "gate_result": None,
                        "created_at": db.utcnow(),
                    }
                    await db.insert_snapshot(conn, row)
                    await db.append_audit(
                        conn,
                        key=f"{inp.job_id}:snapshot",
                        actor="labelfabric",
                        kind="snapshot",
                        subject=f"{inp.dataset}@{version}",
                        payload={
                            "s3_version_id": data_version,
                            "content_sha256": content_sha,
                            "items": count,
                            "manifest_sha256": manifest_sha,
                        },
                    )
            except (BotoCoreError, ClientError) as err:
                # Transient by nature (endpoint down, throttled): raise, Temporal retries.
                raise ApplicationError(
                    f"S3 write to bucket {self.bucket!r} failed: {err}", type="S3Error"
                ) from err
        return SnapshotRef(
            dataset=inp.dataset,
            version=version,
            s3_key=data_key(inp.dataset),
            s3_version_id=data_version,
            manifest_version_id=manifest_version,
            item_count=count,
            content_sha256=content_sha,
        )

    async def _write_labels(
        self, dataset: str, out: IO[bytes]
    ) -> tuple[str, int, Counter[str], set[str]]:
        digest = hashlib.sha256()
        distribution: Counter[str] = Counter()
        job_ids: set[str] = set()
        count = 0
        async for item_id, text, label, source, job_id in db.current_labels(self.engine, dataset):
            line = (
                json.dumps(
                    {
                        "id": item_id,
                        "text": text,
                        "label": label,
                        "label_source": source,
                        "job_id": job_id,
                    },
                    ensure_ascii=False,
                    sort_keys=True,
                ).encode()
                + b"\n"
            )
            digest.update(line)
            out.write(line)
            distribution[label] += 1
            job_ids.add(job_id)
            count += 1
            if count % 10_000 == 0:
                activity.heartbeat(count)
        out.seek(0)
        return digest.hexdigest(), count, distribution, job_ids

    def _put_once(
        self, key: str, body: IO[bytes] | bytes, job_id: str, sha: str, content_type: str
    ) -> str:
        """Put a new object version, unless this job already put this content there."""
        found, resp = put_once(
            self.s3, self.bucket, key, body, writer=job_id, sha=sha, content_type=content_type
        )
        return found or _version_id(resp, key)


def _version_id(resp: Any, key: str) -> str:
    version = resp.get("VersionId")
    if not version or version == "null":
        raise ApplicationError(
            f"S3 returned no version id for {key}: bucket versioning is off",
            type="S3VersioningOff",
            non_retryable=True,
        )
    return str(version)


def _ref(row: Any) -> SnapshotRef:
    return SnapshotRef(
        dataset=row.dataset,
        version=row.version,
        s3_key=row.s3_key,
        s3_version_id=row.s3_version_id,
        manifest_version_id=row.manifest_version_id,
        item_count=row.item_count,
        content_sha256=row.content_sha256,
    )
