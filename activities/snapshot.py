"""`snapshot`: a dataset's current labels as JSONL plus a manifest, as new S3 object versions.

A dataset's labels live at one key; every snapshot is a new object version, and the catalog
row maps `dataset@N` to the S3 version ids. Idempotent: a job gets one snapshot row, and a
retry after the upload but before the row reuses the object version this job already wrote
(found by its metadata), so no orphan versions pile up.

Sealed at rest (`encrypt`): the labels object is stored sealed with a fresh data key wrapped
by the payload key ring's active key (formats/sealed.py); the manifest, which holds no item
text, stays readable and names the scheme, the key id and the sealed bytes' sha256. The
content sha256 the catalog and the manifest record is always the plaintext's, so audit
verify, exports and provenance mean the same with sealing on or off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ids
from activities.anchor import no_anchor
from activities.errors import classify
from activities.gates import SnapshotMetrics, load_gate, rollback_on_failure, verdict
from activities.metrics import gate_verdict as count_verdict
from activities.payloads import SnapshotInput, SnapshotRef
from activities.s3 import S3Client, put_once, read_plain
from agents.store import TaskStore
from agents.tasks import TaskError
from catalog import db, kinds
from formats import sealed, snapshot_files
from policy_rules.engine import Policy
from policy_rules.store import PolicyStore


def data_key(dataset: str) -> str:
    return f"datasets/{dataset}/labels.jsonl"


def manifest_key(dataset: str) -> str:
    return f"datasets/{dataset}/manifest.json"


@dataclass
class SnapshotActivities:
    engine: AsyncEngine
    s3: S3Client
    bucket: str
    tasks: TaskStore | None = None  # where the task files name their gates; None = no gates
    policies: PolicyStore | None = None
    anchor: Callable[[], Awaitable[None]] = no_anchor  # the audit head into S3
    # The payload key ring, read at each snapshot (a rotation needs no restart): seals new
    # labels objects when `encrypt`, and opens sealed parents either way. None: no ring.
    ring: Callable[[], sealed.Ring] | None = None
    encrypt: bool = False

    def __post_init__(self) -> None:
        if self.encrypt and self.ring is None:
            raise ValueError("sealing snapshots needs the key ring")

    @activity.defn(name="snapshot")
    async def snapshot(self, inp: SnapshotInput) -> SnapshotRef:
        async with self.engine.connect() as conn:
            existing = await db.snapshot_for_job(conn, inp.dataset, inp.job_id)
        if existing is not None:
            return _ref(existing)
        gate, gate_error, gold = await self._gate(inp.dataset)
        metrics = SnapshotMetrics()

        with tempfile.TemporaryFile() as body:
            content_sha, job_ids = await self._write_labels(inp.dataset, body, metrics, gold)
            count, distribution = metrics.distribution.total(), metrics.distribution
            if gate is not None or gate_error is not None:
                async for votes in db.current_label_votes(self.engine, inp.dataset):
                    metrics.agreement.add(votes)
            try:
                data_version, sealing = await asyncio.to_thread(
                    self._put_data, inp.dataset, body, inp.job_id, content_sha
                )
                async with self.engine.begin() as conn:
                    # One snapshot writer per dataset at a time keeps version numbers dense.
                    await db.lock_dataset_snapshots(conn, inp.dataset)
                    existing = await db.snapshot_for_job(conn, inp.dataset, inp.job_id)
                    if existing is not None:
                        return _ref(existing)
                    parent = await db.latest_snapshot(conn, inp.dataset)
                    version = await db.next_snapshot_version(conn, inp.dataset)
                    await self._record_changes(conn, inp.dataset, version, parent, body)
                    provenance = await db.job_agents_and_policies(conn, job_ids)
                    # A parent from before distributions were recorded counts as none.
                    before = parent.label_distribution if parent is not None else None
                    judged = (
                        verdict(gate, gate_error, metrics.inputs(before))
                        if (gate is not None or gate_error is not None)
                        else None
                    )
                    ready = None if judged is None else judged["outcome"] == "pass"
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
                            "encryption": sealing,  # None: stored in clear
                        },
                        "content_sha256": content_sha,
                        "item_count": count,
                        "label_distribution": dict(sorted(distribution.items())),
                        "job_ids": sorted(job_ids),
                        "created_by_job": inp.job_id,
                        **provenance,
                        "gate": judged,
                        "training_ready": ready,
                        # The audit chain's head now: evidence, outside the database, that
                        # every event up to here existed (`labelfabric audit verify`).
                        "audit_head": await db.audit_head(conn),
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
                        "label_distribution": dict(sorted(distribution.items())),
                        "gate_result": None if judged is None else judged["outcome"],
                        "training_ready": ready,
                        "gate": judged,
                        "created_at": db.utcnow(),
                    }
                    await db.insert_snapshot(conn, row)
                    if judged is not None:
                        await self._record_verdict(conn, inp, version, judged)
                    await db.append_audit(
                        conn,
                        key=f"{inp.job_id}:snapshot",
                        actor="labelfabric",
                        kind=kinds.SNAPSHOT,
                        subject=f"{inp.dataset}@{version}",
                        payload={
                            "s3_version_id": data_version,
                            "content_sha256": content_sha,
                            "items": count,
                            "manifest_sha256": manifest_sha,
                        },
                    )
            except (BotoCoreError, ClientError) as err:
                refused = classify(err)  # a 4xx answer would be the same on every retry
                if refused is not None:
                    raise refused from None
                # Endpoint down, throttled, 5xx: raise, Temporal retries (bounded).
                raise ApplicationError(
                    f"S3 write to bucket {self.bucket!r} failed: {err}", type=ids.S3_ERROR
                ) from err
        if judged is not None:
            count_verdict(inp.dataset, judged)  # committed: activities/metrics.py
        await self.anchor()
        return SnapshotRef(
            dataset=inp.dataset,
            version=version,
            s3_key=data_key(inp.dataset),
            s3_version_id=data_version,
            manifest_version_id=manifest_version,
            item_count=count,
            content_sha256=content_sha,
            training_ready=ready,
        )

    async def _gate(self, dataset: str) -> tuple[Policy | None, str | None, dict[str, str]]:
        """The gate of the dataset's task (or why it cannot judge) and the task's gold labels;
        (None, None, {}) when the task names no gate."""
        if self.tasks is None or self.policies is None:
            return None, None, {}
        async with self.engine.connect() as conn:
            task_name = await db.dataset_task(conn, dataset)
            if task_name is None:
                return None, None, {}
            try:
                task = self.tasks.get(task_name)
            except TaskError as err:
                return None, f"task {task_name} cannot be loaded to find its gate: {err}", {}
            if not task.gate:
                return None, None, {}
            gate, error = await load_gate(conn, self.policies, task.gate)
            return gate, error, await db.gold_of_task(conn, task.name)

    async def _record_verdict(
        self, conn: AsyncConnection, inp: SnapshotInput, version: int, judged: dict[str, Any]
    ) -> None:
        subject = f"{inp.dataset}@{version}"
        rolled = await rollback_on_failure(
            conn, job_id=inp.job_id, subject=subject, judged=judged, at=db.utcnow()
        )
        await db.append_audit(
            conn,
            key=f"{inp.job_id}:gate",
            actor="labelfabric",
            kind=kinds.GATE_VERDICT,
            subject=subject,
            payload={
                "gate": f"{judged.get('policy')}@{judged.get('version')}",
                "outcome": judged["outcome"],
                "rule": judged.get("rule"),
                "error": judged.get("error"),
                "read": judged.get("read", {}),
                "rolled_back": rolled,
            },
        )

    async def _record_changes(
        self, conn: AsyncConnection, dataset: str, version: int, parent: Any, body: IO[bytes]
    ) -> None:
        """`snapshot_change` rows against the parent version, by one merge pass over both
        files (the parent's read back from its S3 version), in constant memory."""
        with tempfile.TemporaryFile() as old:
            if parent is not None:
                try:
                    await asyncio.to_thread(
                        self._read_plain, parent.s3_key, parent.s3_version_id, old
                    )
                except sealed.SealError as err:
                    where = f"{dataset}@{parent.version} (s3://{self.bucket}/{parent.s3_key})"
                    raise ApplicationError(
                        f"{where} cannot be opened: {err}",
                        type=ids.BAD_CONFIG if isinstance(err, sealed.MissingKey) else ids.BAD_DATA,
                        non_retryable=True,
                    ) from None
                old.seek(0)
            body.seek(0)
            batches = snapshot_files.change_batches(
                dataset, version, old if parent is not None else None, body
            )
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                await db.insert_changes(conn, batch)
                activity.heartbeat(f"changes of {dataset}@{version}")

    async def _write_labels(
        self, dataset: str, out: IO[bytes], metrics: SnapshotMetrics, gold: dict[str, str]
    ) -> tuple[str, set[str]]:
        digest = hashlib.sha256()
        job_ids: set[str] = set()
        count = 0
        async for item_id, text, label, source, job_id, split in db.current_labels(
            self.engine, dataset
        ):
            line = snapshot_files.encode(
                {
                    "id": item_id,
                    "text": text,
                    "label": label,
                    "label_source": source,
                    "job_id": job_id,
                    "split": split,
                }
            )
            digest.update(line)
            out.write(line)
            metrics.add(item_id, label, source, gold)
            job_ids.add(job_id)
            count += 1
            if count % 10_000 == 0:
                activity.heartbeat(count)
        out.seek(0)
        return digest.hexdigest(), job_ids

    def _read_plain(self, key: str, version_id: str, dst: IO[bytes]) -> None:
        keys = self.ring().keys if self.ring is not None else {}
        read_plain(self.s3, self.bucket, key, version_id, dst, keys)

    def _put_data(
        self, dataset: str, body: IO[bytes], job_id: str, sha: str
    ) -> tuple[str, dict[str, str] | None]:
        """The labels' new object version (sealed when `encrypt`) and how it was sealed."""
        key = data_key(dataset)
        if not self.encrypt or self.ring is None:
            return self._put_once(key, body, job_id, sha, "application/x-ndjson"), None
        ring = self.ring()
        with tempfile.TemporaryFile() as out:
            done = sealed.seal(body, out, key_id=ring.active, kek=ring.keys[ring.active])
            out.seek(0)
            found, resp = put_once(
                self.s3, self.bucket, key, out, writer=job_id, sha=sha,
                content_type="application/octet-stream", metadata=done.metadata(),
            )  # fmt: skip
        body.seek(0)
        if found is None:
            return _version_id(resp, key), done.manifest()
        # A retry: the version this job put before, sealed under a data key of its own.
        head = self.s3.head_object(Bucket=self.bucket, Key=key, VersionId=found)
        before = sealed.Sealed.from_metadata(head.get("Metadata", {}))
        return found, before.manifest() if before is not None else None

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
            type=ids.S3_VERSIONING_OFF,
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
        training_ready=row.training_ready,
    )
