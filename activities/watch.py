"""Watching an S3 prefix for new data: list the object versions under it and name each one no
job has labeled yet (by its deterministic job id, `ids.watch_job_id`).

Only object versions whose name says JSONL or CSV are taken; delete markers are skipped. The
catalog's job table is the memory: a version whose job exists (running, completed or failed)
is not new, however long ago it ran, so a restarted or second watcher never labels an object
twice (the workflow id is a second guard while the job runs).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import ids
from activities.payloads import NewObject, WatchInput
from catalog import db
from formats.sources import FORMATS


@dataclass
class WatchActivities:
    engine: AsyncEngine
    s3: Any

    @activity.defn(name="new_objects")
    async def new_objects(self, inp: WatchInput) -> list[NewObject]:
        try:
            versions = await asyncio.to_thread(self._versions, inp.bucket, inp.prefix)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "AccessDenied", "InvalidBucketName"):
                raise ApplicationError(
                    f"cannot watch s3://{inp.bucket}/{inp.prefix}: {code}",
                    type=ids.SOURCE_NOT_FOUND,
                    non_retryable=True,
                ) from err
            raise
        except BotoCoreError as err:
            raise ApplicationError(
                f"S3 unreachable while watching s3://{inp.bucket}/{inp.prefix}: {err}",
                type=ids.S3_UNREACHABLE,
            ) from err
        candidates = [
            NewObject(
                key=key,
                version_id=version,
                job_id=ids.watch_job_id(inp.dataset, inp.bucket, key, version),
            )
            for key, version in versions
        ]
        async with self.engine.connect() as conn:
            known = await db.existing_jobs(conn, [c.job_id for c in candidates])
        return [c for c in candidates if c.job_id not in known][: inp.max_per_run]

    def _versions(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        """(key, version id) of every object version under `prefix`, oldest first."""
        found: list[tuple[Any, str, str]] = []
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                key = v["Key"]
                if "." + key.rsplit(".", 1)[-1].lower() not in FORMATS:
                    continue
                found.append((v["LastModified"], key, v["VersionId"]))
        found.sort()
        return [(key, version) for _, key, version in found]
