"""Writing the audit log's hash chain: one event per key, each hashing its content and the
previous event's hash. `catalog.audit` verifies the chain."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog.engine import T_AUDIT
from catalog.models import utcnow

AUDIT_LOCK = 0x6175_6469_74  # "audit": one writer at a time extends the hash chain
GENESIS_HASH = "0" * 64


def event_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


async def audit_head(conn: AsyncConnection) -> str:
    """The newest event's hash (the genesis hash for an empty log)."""
    head = await conn.scalar(select(T_AUDIT.c.hash).order_by(T_AUDIT.c.id.desc()).limit(1))
    return str(head or GENESIS_HASH)


async def append_audit(
    conn: AsyncConnection,
    *,
    key: str,
    actor: str,
    kind: str,
    subject: str,
    payload: Mapping[str, Any],
) -> None:
    """Append one event to the hash chain, once per `key`, inside the caller's transaction."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK})
    exists = await conn.scalar(select(T_AUDIT.c.id).where(T_AUDIT.c.event_key == key))
    if exists is not None:
        return
    prev = await conn.scalar(select(T_AUDIT.c.hash).order_by(T_AUDIT.c.id.desc()).limit(1))
    at = utcnow()
    content = {
        "key": key,
        "at": at.isoformat(),
        "actor": actor,
        "kind": kind,
        "subject": subject,
        "payload": dict(payload),
    }
    prev_hash = prev or GENESIS_HASH
    await conn.execute(
        insert(T_AUDIT).values(
            event_key=key,
            at=at,
            actor=actor,
            kind=kind,
            subject=subject,
            payload=dict(payload),
            prev_hash=prev_hash,
            hash=event_hash(prev_hash, content),
        )
    )
