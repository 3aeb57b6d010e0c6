"""Review page sign-in (`reviewer_account`): password hashes, one-time login links, and the
session generation that ends every older session at once.

Credentials only: the role, tasks and clearance a person has are the roster's, so nothing
the review page can write here grants anything. Secrets never reach this module in clear:
callers pass an argon2id hash (passwords) or a sha256 (link tokens, which are random and
high-entropy). Every change is an audit event naming who made it, never the secret.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import append_audit
from catalog.models import ReviewerAccount, utcnow

T_ACCOUNT = ReviewerAccount.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Account:
    reviewer: str
    password_hash: str | None
    generation: int
    link_expires_at: datetime | None  # a pending login link's expiry (None: no link)


def _account(row: Any) -> Account:
    return Account(
        reviewer=row.reviewer,
        password_hash=row.password_hash,
        generation=row.generation,
        link_expires_at=row.link_expires_at if row.link_hash else None,
    )


async def account(conn: AsyncConnection, reviewer: str) -> Account | None:
    row = (await conn.execute(select(T_ACCOUNT).where(T_ACCOUNT.c.reviewer == reviewer))).first()
    return _account(row) if row is not None else None


async def accounts(conn: AsyncConnection) -> dict[str, Account]:
    rows = await conn.execute(select(T_ACCOUNT).order_by(T_ACCOUNT.c.reviewer))
    return {r.reviewer: _account(r) for r in rows}


async def record_event(
    conn: AsyncConnection, reviewer: str, actor: str, action: str, **payload: Any
) -> None:
    """An audit event about a reviewer's sign-in or standing (`action`: login_link_issued,
    login_link_used, password_set, role_set, token_issued, …), never carrying a secret."""
    await append_audit(
        conn,
        key=f"account:{reviewer}:{uuid.uuid4().hex}",  # a person's act: never retried
        actor=actor,
        kind=kinds.REVIEWER_ACCOUNT,
        subject=f"reviewer:{reviewer}",
        payload={"action": action, **payload},
    )


async def _ensure(conn: AsyncConnection, reviewer: str) -> None:
    await conn.execute(
        insert(T_ACCOUNT)
        .values(reviewer=reviewer, generation=0, updated_at=utcnow())
        .on_conflict_do_nothing()
    )


async def set_password(
    conn: AsyncConnection, reviewer: str, password_hash: str, *, actor: str
) -> int:
    """Store a new password hash; every session signed before ends. The new generation."""
    await _ensure(conn, reviewer)
    now = utcnow()
    generation = await conn.scalar(
        update(T_ACCOUNT)
        .where(T_ACCOUNT.c.reviewer == reviewer)
        .values(
            password_hash=password_hash,
            password_set_at=now,
            generation=T_ACCOUNT.c.generation + 1,
            updated_at=now,
        )
        .returning(T_ACCOUNT.c.generation)
    )
    await record_event(conn, reviewer, actor, "password_set")
    return int(generation or 0)


async def issue_link(
    conn: AsyncConnection, reviewer: str, token_sha256: str, expires_at: datetime, *, actor: str
) -> None:
    """Make `token_sha256` the reviewer's one pending login link (an older one stops working)."""
    await _ensure(conn, reviewer)
    await conn.execute(
        update(T_ACCOUNT)
        .where(T_ACCOUNT.c.reviewer == reviewer)
        .values(
            link_hash=token_sha256,
            link_expires_at=expires_at,
            link_issued_by=actor,
            updated_at=utcnow(),
        )
    )
    await record_event(
        conn, reviewer, actor, "login_link_issued", expires_at=expires_at.isoformat()
    )


async def use_link(conn: AsyncConnection, token_sha256: str) -> tuple[str, int] | None:
    """(reviewer, session generation) for a pending, unexpired link, which is used up by
    this call (one UPDATE: two concurrent uses cannot both win); None otherwise."""
    now = utcnow()
    row = (
        await conn.execute(
            update(T_ACCOUNT)
            .where(T_ACCOUNT.c.link_hash == token_sha256, T_ACCOUNT.c.link_expires_at > now)
            .values(link_hash=None, link_expires_at=None, updated_at=now)
            .returning(T_ACCOUNT.c.reviewer, T_ACCOUNT.c.generation)
        )
    ).first()
    if row is None:
        return None
    await record_event(conn, row.reviewer, row.reviewer, "login_link_used")
    return str(row.reviewer), int(row.generation)


async def end_sessions(conn: AsyncConnection, reviewer: str) -> int:
    """Sign the reviewer out everywhere: the new generation (0 without an account)."""
    generation = await conn.scalar(
        update(T_ACCOUNT)
        .where(T_ACCOUNT.c.reviewer == reviewer)
        .values(generation=T_ACCOUNT.c.generation + 1, updated_at=utcnow())
        .returning(T_ACCOUNT.c.generation)
    )
    return int(generation or 0)
