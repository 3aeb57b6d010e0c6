"""Snapshot writes on real SeaweedFS: a retry reuses its own object version, others add one."""

from __future__ import annotations

import asyncio
import uuid

from worker.main import Runtime
from worker.settings import Settings


async def test_put_once_reuses_the_version_this_job_wrote(
    runtime: Runtime, stack: Settings
) -> None:
    snapshots = runtime.snapshots
    key = f"test/{uuid.uuid4().hex}/labels.jsonl"
    first = await asyncio.to_thread(
        snapshots._put_once, key, b"a\n", "job-1", "sha-a", "text/plain"
    )
    retry = await asyncio.to_thread(
        snapshots._put_once, key, b"a\n", "job-1", "sha-a", "text/plain"
    )
    other = await asyncio.to_thread(
        snapshots._put_once, key, b"b\n", "job-2", "sha-b", "text/plain"
    )
    assert first == retry
    assert other != first
    versions = snapshots.s3.list_object_versions(Bucket=stack.s3_bucket, Prefix=key)["Versions"]
    assert sorted(v["VersionId"] for v in versions) == sorted([first, other])
    old = snapshots.s3.get_object(Bucket=stack.s3_bucket, Key=key, VersionId=first)
    assert old["Body"].read() == b"a\n"
