"""The audit chain's head, anchored in versioned S3 after every activity that appends events.

The hash chain shows an altered, deleted or reordered event, but not the newest events
removed together: the chain that is left is intact. Snapshot manifests record the head at
their time; between snapshots, this anchor does (`audit/head.json`, a new S3 object version
each time, outside the database), and `labelfabric audit verify` requires the newest anchor's
head to be in the chain. Best effort: an anchor that cannot be written is logged, and the
next one covers the same events.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from activities.s3 import S3Client
from catalog import db

AUDIT_HEAD_KEY = "audit/head.json"
log = logging.getLogger(__name__)


@dataclass
class AuditAnchor:
    engine: AsyncEngine
    s3: S3Client
    bucket: str

    async def __call__(self) -> None:
        try:
            async with self.engine.connect() as conn:
                head = await db.audit_head(conn)
            body = json.dumps({"head": head, "at": db.utcnow().isoformat()}).encode()
            await asyncio.to_thread(
                self.s3.put_object, Bucket=self.bucket, Key=AUDIT_HEAD_KEY, Body=body
            )
        except Exception as err:  # never fail the work that was just committed
            log.warning("audit head not anchored in S3 (the next anchor covers it): %s", err)


async def no_anchor() -> None:
    """For activity classes built without S3 (tests of one activity)."""
