"""Job activities: resolve what a job will use, ingest its source, close it.

`prepare_job` turns names into versions once, at the start (policy id → version + sha256,
source → S3 version id), so the job keeps them to the end even if files change meanwhile.
Bad input raises a non-retryable ApplicationError whose type and message name the problem.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ids
from activities.anchor import no_anchor
from activities.errors import JOB_EXISTS, classify
from activities.payloads import (
    FinishJobInput,
    IngestInput,
    IngestResult,
    JobPlan,
    PolicyRefPayload,
    PrepareJobInput,
    dataset_name_problem,
)
from activities.s3 import S3Client
from activities.sources import SourceAccessError, open_local
from agents import pii
from agents.pipeline import BEAT_S
from agents.store import TaskStore
from agents.tasks import TaskError
from catalog import datasets, db, kinds
from formats import leakage
from formats.sources import (
    Record,
    Refusal,
    SourceError,
    clean,
    parse_s3_uri,
    read_records,
    s3_version,
    source_format,
)
from policy_rules.engine import PolicyError
from policy_rules.store import PolicyStore

INGEST_BATCH = 2000


def bad_input(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


@dataclass
class JobActivities:
    engine: AsyncEngine
    s3: S3Client
    s3_endpoint: str
    tasks: TaskStore
    policies: PolicyStore
    # Local sources must be regular files under one of these (LABELFABRIC_SOURCE_ROOTS).
    source_roots: Sequence[Path] = field(default_factory=tuple)
    anchor: Callable[[], Awaitable[None]] = no_anchor  # the audit head into S3

    @activity.defn(name="prepare_job")
    async def prepare_job(self, inp: PrepareJobInput) -> JobPlan:
        problem = dataset_name_problem(inp.dataset)
        if problem:
            raise bad_input(ids.BAD_INPUT, problem)
        try:
            task = self.tasks.get(inp.task)
        except TaskError as err:
            raise bad_input(ids.UNKNOWN_TASK, str(err)) from err
        known = [a.name for a in task.agents]
        agents = list(inp.agents) if inp.agents else known
        unknown = [a for a in agents if a not in known]
        if unknown:
            raise bad_input(
                "UnknownAgent",
                f"task {task.name!r} has no agent {', '.join(map(repr, unknown))}; "
                f"its agents: {', '.join(known)}",
            )
        try:
            # The ref and the kind come from the same bytes.
            resolved = self.policies.resolve(await self._active(inp.policy))
        except PolicyError as err:
            raise bad_input("UnknownPolicy", str(err)) from err
        ref, kind = resolved.ref, resolved.kind
        if kind != "route":
            raise bad_input(
                "UnknownPolicy",
                f"{ref} is a {kind} policy: a job needs a routing policy (kind: route)",
            )
        if len(set(agents)) != len(agents):
            raise bad_input("UnknownAgent", f"an agent is named twice: {', '.join(agents)}")
        try:
            source_format(inp.source)
        except SourceError as err:
            raise bad_input(ids.BAD_SOURCE, str(err)) from err
        await asyncio.to_thread(self._check_source, inp.source)

        policy = PolicyRefPayload(id=ref.id, version=ref.version, sha256=ref.sha256)
        async with self.engine.begin() as conn:
            refused = await db.claim_job(
                conn,
                {
                    "id": inp.job_id,
                    "dataset": inp.dataset,
                    "task": task.name,
                    "source": inp.source,
                    "policy_id": ref.id,
                    "policy_version": ref.version,
                    "policy_sha256": ref.sha256,
                    "agents": agents,
                    "reason": inp.reason or None,
                    "status": "running",
                    "items": 0,
                    "duplicates": 0,
                    "quarantined": 0,
                },
            )
            if refused:
                raise bad_input(JOB_EXISTS, refused)
            await db.append_audit(
                conn,
                key=f"{inp.job_id}:started",
                actor="labelfabric",
                kind=kinds.JOB_STARTED,
                subject=inp.job_id,
                payload={
                    "dataset": inp.dataset,
                    "task": task.name,
                    "source": inp.source,
                    "policy": f"{ref.id}@{ref.version}",
                    "policy_sha256": ref.sha256,
                    "agents": agents,
                },
            )
        return JobPlan(policy=policy, agents=agents)

    async def _active(self, policy: str) -> str:
        """`id` -> `id@V` of its active version (`labelfabric policy activate`), checked
        against the bytes that were activated; `id` alone when none was ever activated (the
        newest version); `id@V` as given."""
        if "@" in policy:
            return policy
        async with self.engine.connect() as conn:
            row = await db.active_policy(conn, policy)
        if row is None:
            return policy
        ref = self.policies.locate(f"{policy}@{row.version}")  # hashed, not parsed
        if ref.sha256 != row.sha256:
            raise bad_input(
                ids.POLICY_CHANGED,
                f"active policy {ref} changed on disk since it was activated (sha256 "
                f"{row.sha256[:12]} then, {ref.sha256[:12]} now): released versions are "
                "immutable; restore it, or add and activate a new version",
            )
        return str(ref)

    def _check_source(self, source: str) -> None:
        if not source.startswith("s3://"):
            try:
                open_local(source, self.source_roots).close()
            except SourceAccessError as err:
                raise bad_input(err.kind, str(err)) from err
            return
        bucket, key = parse_s3_uri(source)
        version = s3_version(source)[1]
        try:
            if version:
                self.s3.head_object(Bucket=bucket, Key=key, VersionId=version)
            else:
                self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchVersion"):
                raise bad_input(ids.SOURCE_NOT_FOUND, f"source not found: {source}") from err
            raise
        except (EndpointConnectionError, BotoCoreError) as err:
            raise ApplicationError(
                f"S3 endpoint {self.s3_endpoint} is unreachable while reading {source}: {err}",
                type=ids.S3_UNREACHABLE,
            ) from err

    @activity.defn(name="ingest")
    async def ingest(self, inp: IngestInput) -> IngestResult:
        """Validate every record, store new items, list this job's items in source order.

        A retry starts again from the top: ordinals are the order of first appearance in the
        source and every insert ignores conflicts, so nothing is stored twice.
        """
        try:
            task = self.tasks.get(inp.task)
            fmt = source_format(inp.source)
        except (TaskError, SourceError) as err:
            raise bad_input(ids.BAD_SOURCE, str(err)) from err
        seen: dict[bytes, str | None] = {}  # content -> the split this source gave it
        items: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        splits: dict[str, str] = {}  # pool items this source assigns a split
        duplicates = quarantined = stored = 0
        async with self.engine.connect() as conn:
            guarded = [inp.dataset, *await datasets.related(conn, inp.dataset)]

        def refuse(line: int, reason: str, excerpt: str) -> None:
            nonlocal quarantined
            quarantined += 1
            rejected.append(
                {"job_id": inp.job_id, "line": line, "reason": reason, "excerpt": clean(excerpt)}
            )

        async def flush() -> None:
            """Store the batch. Ordinals are given here, to the items actually stored, so a
            record the catalog refuses leaves no gap in the job's ordinals."""
            nonlocal stored
            await self._mark(task.pii, items)
            try:
                async with self.engine.begin() as conn:
                    job_items = self._ordinals(inp.job_id, items, stored)
                    await db.record_ingest(
                        conn, job_id=inp.job_id, items=items, job_items=job_items, rejected=rejected
                    )
                    await db.assign_splits(conn, inp.dataset, splits)
                stored += len(job_items)
            except Exception as err:
                if classify(err) is None:
                    raise  # transient: the activity retries from the top, idempotently
                await self._store_one_by_one(inp.job_id, inp.dataset, items, splits, refuse)
                stored += await self._store_rest(inp.job_id, items, rejected, stored)
            items.clear()
            rejected.clear()
            splits.clear()

        async def process(
            batch: list[Record | Refusal], seen: dict[bytes, str | None], dry: bool
        ) -> None:
            """Check (and unless `dry`, store) one batch of records in source order."""
            nonlocal duplicates
            ids = [r.item_id for r in batch if isinstance(r, Record)]
            async with self.engine.connect() as conn:
                placed = await datasets.placements(conn, guarded, ids)
            for rec in batch:
                if not isinstance(rec, Record):
                    if not dry:
                        refuse(rec.line, rec.reason, rec.excerpt)
                    continue
                digest = bytes.fromhex(rec.item_id)
                leak = leakage.leak(rec, seen, placed.get(rec.item_id, []), inp.dataset)
                if leak is not None:
                    if task.leakage == "refuse":
                        raise bad_input("Leakage", f"{inp.source}: line {rec.line}: {leak}")
                    refuse(rec.line, leak, rec.text[:200])
                    continue
                if digest in seen:
                    duplicates += 0 if dry else 1
                    continue
                seen[digest] = rec.split
                if dry:
                    continue
                if rec.split is not None:
                    splits[rec.item_id] = rec.split
                items.append(
                    {
                        "dataset": inp.dataset,
                        "id": rec.item_id,
                        "text": rec.text,
                        "source_uri": inp.source,
                        "source_line": rec.line,
                        "split": rec.split,
                        "sensitivity": "normal",
                        "redactions": [],
                        "created_at": db.utcnow(),
                    }
                )
            if not dry:
                await flush()
            activity.heartbeat(len(seen) + quarantined + duplicates)

        async def scan(seen: dict[bytes, str | None], dry: bool) -> None:
            async with self._open(inp.source) as stream:
                records = read_records(
                    stream, fmt, text_field=task.text_field, max_chars=task.max_chars
                )
                batch: list[Record | Refusal] = []
                try:
                    for rec in records:
                        batch.append(rec)
                        if len(batch) >= INGEST_BATCH:
                            await process(batch, seen, dry)
                            batch = []
                except SourceError as err:
                    raise bad_input(ids.BAD_SOURCE, f"{inp.source}: {err}") from err
                await process(batch, seen, dry)

        if task.leakage == "refuse":
            # All or nothing: a first pass only checks, so a leak on the last line refuses
            # the source before any of it is stored.
            await scan({}, dry=True)
        await scan(seen, dry=False)
        await flush()
        async with self.engine.begin() as conn:
            await db.set_job_counts(
                conn, inp.job_id, items=stored, duplicates=duplicates, quarantined=quarantined
            )
            await db.append_audit(
                conn,
                key=f"{inp.job_id}:ingested",
                actor="labelfabric",
                kind=kinds.INGESTED,
                subject=inp.job_id,
                payload={"items": stored, "duplicates": duplicates, "quarantined": quarantined},
            )
        return IngestResult(items=stored, duplicates=duplicates, quarantined=quarantined)

    @staticmethod
    async def _mark(spec: pii.PiiSpec | None, items: list[dict[str, Any]]) -> None:
        """PII detection on a batch of new items (`agents/pii.py`), on a thread, heartbeating:
        each item's redactions (type and span, never the value) and the sensitivity the task
        maps them to, which decides who may review it. Without `pii:`, nothing changes."""
        if spec is None or not items:
            return
        texts = [item["text"] for item in items]
        work = asyncio.ensure_future(asyncio.to_thread(lambda: [pii.mark(t, spec) for t in texts]))
        while not work.done():
            await asyncio.wait({work}, timeout=BEAT_S)
            activity.heartbeat()
        for item, (found, level) in zip(items, work.result(), strict=True):
            item["redactions"], item["sensitivity"] = found, level

    @staticmethod
    def _ordinals(job_id: str, items: list[dict[str, Any]], first: int) -> list[dict[str, Any]]:
        return [
            {"job_id": job_id, "ordinal": first + i, "item_id": item["id"]}
            for i, item in enumerate(items)
        ]

    async def _store_one_by_one(
        self,
        job_id: str,
        dataset: str,
        items: list[dict[str, Any]],
        splits: dict[str, str],
        refuse: Any,
    ) -> None:
        """The catalog refused a batch: find the records it refuses, one savepoint each, and
        quarantine them with the reason; `items` keeps the rest. Deterministic, so a retry of
        the activity refuses the same records and gives the same ordinals."""
        keep: list[dict[str, Any]] = []
        async with self.engine.begin() as conn:
            for item in items:
                try:
                    async with conn.begin_nested():
                        await db.record_ingest(
                            conn, job_id=job_id, items=[item], job_items=[], rejected=[]
                        )
                        if item["id"] in splits:
                            await db.assign_splits(conn, dataset, {item["id"]: splits[item["id"]]})
                except Exception as err:
                    refused = classify(err)
                    if refused is None:
                        raise
                    refuse(item["source_line"], refused.message, item["text"][:200])
                    continue
                keep.append(item)
        items[:] = keep

    async def _store_rest(
        self, job_id: str, items: list[dict[str, Any]], rejected: list[dict[str, Any]], first: int
    ) -> int:
        async with self.engine.begin() as conn:
            job_items = self._ordinals(job_id, items, first)
            await db.record_ingest(
                conn, job_id=job_id, items=[], job_items=job_items, rejected=rejected
            )
        return len(job_items)

    @asynccontextmanager
    async def _open(self, source: str) -> AsyncIterator[IO[bytes]]:
        if not source.startswith("s3://"):
            try:
                fh = await asyncio.to_thread(open_local, source, self.source_roots)
            except SourceAccessError as err:
                raise bad_input(err.kind, str(err)) from err
            with fh:
                yield fh
            return
        bucket, key = parse_s3_uri(source)
        # Spooled to a local temp file so a large object streams from disk, not memory.
        with tempfile.TemporaryFile() as tmp:
            try:
                version = s3_version(source)[1]
                extra = {"VersionId": version} if version else None
                await asyncio.to_thread(self.s3.download_fileobj, bucket, key, tmp, ExtraArgs=extra)
            except (EndpointConnectionError, BotoCoreError) as err:
                raise ApplicationError(
                    f"S3 endpoint {self.s3_endpoint} is unreachable while reading {source}: {err}",
                    type=ids.S3_UNREACHABLE,
                ) from err
            tmp.seek(0)
            yield tmp

    @activity.defn(name="finish_job")
    async def finish_job(self, inp: FinishJobInput) -> None:
        async with self.engine.begin() as conn:
            if not await db.finish_job(conn, inp.job_id, inp.status):
                return  # closed already (a retry), or refused before it was made
            await db.append_audit(
                conn,
                key=f"{inp.job_id}:{inp.status}",
                actor="labelfabric",
                kind=kinds.job_finished(inp.status),
                subject=inp.job_id,
                payload={},
            )
        await self.anchor()
