"""Alembic environment: runs the migrations online over the async engine.

Workers and `labelfabric up` both migrate at start; a PostgreSQL advisory lock makes
concurrent starts take turns, and `upgrade head` on a current schema does nothing.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection

from catalog.engine import async_engine  # libpq's sslmode & co. in the URL, as the app

MIGRATION_LOCK = 0x6C61_6265_6C66  # "labelf"


def _run(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
    try:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()


async def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is set by catalog.db.migrate"
    engine = async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("labelfabric migrations run online only")
asyncio.run(_main())
