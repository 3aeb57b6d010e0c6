"""The catalog on real PostgreSQL: migrations, model/migration agreement, audit chain."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

import catalog.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from catalog import db
from worker.settings import Settings


@pytest.fixture(scope="module")
async def engine(stack: Settings) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(db.migrate, stack.owner_url)
    eng = db.make_engine(stack.catalog_url)
    yield eng
    await eng.dispose()


async def test_migrate_is_idempotent(stack: Settings, engine: AsyncEngine) -> None:
    await asyncio.to_thread(
        db.migrate, stack.owner_url
    )  # a second run on a current schema changes nothing
    async with engine.connect() as conn:
        version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    newest = sorted(p.name for p in (db.MIGRATIONS / "versions").glob("0*.py"))[-1]
    assert version == newest[:4]


async def test_models_match_migrations(engine: AsyncEngine) -> None:
    def diff(sync_conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return [
            d
            for d in compare_metadata(ctx, SQLModel.metadata)
            if not (d[0] == "remove_table" and d[1].name == "alembic_version")
        ]

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_audit_events_chain_and_are_appended_once(engine: AsyncEngine) -> None:
    key = uuid.uuid4().hex
    async with engine.begin() as conn:
        for i in range(3):
            await db.append_audit(
                conn, key=f"{key}:{i}", actor="test", kind="probe", subject=key, payload={"i": i}
            )
        await db.append_audit(  # same key again: nothing new
            conn, key=f"{key}:0", actor="test", kind="probe", subject=key, payload={"i": 0}
        )
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(db.T_AUDIT).where(db.T_AUDIT.c.subject == key).order_by(db.T_AUDIT.c.id)
            )
        ).all()
    assert len(rows) == 3
    for prev, row in zip(rows, rows[1:], strict=False):
        assert row.prev_hash == prev.hash
    for row in rows:
        content = {
            "key": row.event_key,
            "at": row.at.isoformat(),
            "actor": row.actor,
            "kind": row.kind,
            "subject": row.subject,
            "payload": row.payload,
        }
        assert db.event_hash(row.prev_hash, content) == row.hash
