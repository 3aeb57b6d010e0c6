"""The catalog's engine, its migrations, its table handles and the idempotent bulk insert.

Every write is keyed by workflow state and uses `ON CONFLICT DO NOTHING` (`_insert_ignore`),
so a retried activity repeats nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from catalog.models import (
    AgentReliability,
    AgentVersion,
    AuditEvent,
    DatasetHeldout,
    Decision,
    DriftCheck,
    GoldLabel,
    Item,
    Job,
    JobItem,
    Label,
    LabelIssue,
    PolicyActivation,
    PolicyShadow,
    RejectedRecord,
    Review,
    ReviewTask,
    ShadowDecision,
    Snapshot,
    SnapshotChange,
    Vote,
)

MIGRATIONS = Path(__file__).resolve().parent.parent / "infra" / "migrations"
# Rows per IN (...) list when reading back by id.
BATCH_ROWS = 1000

T_JOB = Job.__table__  # type: ignore[attr-defined]
T_ITEM = Item.__table__  # type: ignore[attr-defined]
T_JOB_ITEM = JobItem.__table__  # type: ignore[attr-defined]
T_REJECTED = RejectedRecord.__table__  # type: ignore[attr-defined]
T_VOTE = Vote.__table__  # type: ignore[attr-defined]
T_DECISION = Decision.__table__  # type: ignore[attr-defined]
T_LABEL = Label.__table__  # type: ignore[attr-defined]
T_LABEL_ISSUE = LabelIssue.__table__  # type: ignore[attr-defined]
T_AGENT_VERSION = AgentVersion.__table__  # type: ignore[attr-defined]
T_DRIFT_CHECK = DriftCheck.__table__  # type: ignore[attr-defined]
T_SNAPSHOT = Snapshot.__table__  # type: ignore[attr-defined]
T_AUDIT = AuditEvent.__table__  # type: ignore[attr-defined]
T_REVIEW = Review.__table__  # type: ignore[attr-defined]
T_REVIEW_TASK = ReviewTask.__table__  # type: ignore[attr-defined]
T_GOLD = GoldLabel.__table__  # type: ignore[attr-defined]
T_RELIABILITY = AgentReliability.__table__  # type: ignore[attr-defined]
T_ACTIVATION = PolicyActivation.__table__  # type: ignore[attr-defined]
T_SHADOW = PolicyShadow.__table__  # type: ignore[attr-defined]
T_SHADOW_DECISION = ShadowDecision.__table__  # type: ignore[attr-defined]
T_SNAPSHOT_CHANGE = SnapshotChange.__table__  # type: ignore[attr-defined]
T_HELDOUT = DatasetHeldout.__table__  # type: ignore[attr-defined]


# libpq's TLS parameters. SQLAlchemy hands a URL's query to asyncpg as keyword arguments,
# and asyncpg reads these only from a DSN, so they travel in one: `?sslmode=verify-full&
# sslrootcert=/etc/ssl/db-ca.pem` then means what it means to psql (PGSSLMODE and
# PGSSLROOTCERT are honoured as well).
LIBPQ_TLS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcrl",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
    }
)


def async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """`create_async_engine` for a catalog URL, libpq's TLS parameters honoured."""
    parsed = make_url(url)
    tls = {k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items() if k in LIBPQ_TLS}
    if tls:
        parsed = parsed.difference_update_query(tls)
        connect_args = {**kwargs.pop("connect_args", {}), "dsn": "postgresql://?" + urlencode(tls)}
        kwargs["connect_args"] = connect_args
    return create_async_engine(parsed, **kwargs)


def make_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    # hide_parameters: an error names the statement, never the values (item texts, notes),
    # so failures in Temporal history and worker logs carry no labeled data.
    return async_engine(
        url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True, hide_parameters=True
    )


def migrate(url: str) -> None:
    """Bring the schema to the newest migration. Idempotent; safe from many processes at once.

    Synchronous (Alembic drives its own event loop): call it through `asyncio.to_thread`
    from async code.
    """
    from alembic import command  # imported here: a second off every CLI start
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


async def _insert_ignore(
    conn: AsyncConnection, table: Any, rows: Sequence[Mapping[str, Any]]
) -> None:
    # executemany form: SQLAlchemy compiles the statement once and batches the rows
    # ("insertmanyvalues"); a multi-VALUES literal is recompiled per call and was 4x slower.
    if rows:
        await conn.execute(insert(table).on_conflict_do_nothing(), list(rows))
