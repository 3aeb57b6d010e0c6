"""Terminal output shared by the CLI's command groups, and their one way into the catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from worker.settings import Settings


class _Console:
    """rich's Console, made on first use: importing rich.console is a quarter of what
    `labelfabric --help` would otherwise cost, and help never prints through it."""

    _made: Console | None = None

    @property
    def real(self) -> Console:
        if _Console._made is None:
            from rich.console import Console

            _Console._made = Console()
        return _Console._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.real, name, value)


console = _Console()


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


async def anchor(settings: Settings, engine: Any) -> None:
    """Anchor the audit chain's head in S3 after a command that may have appended events."""
    from activities.anchor import AuditAnchor
    from activities.s3 import make_s3_client
    from worker.stack import s3_target

    s3 = make_s3_client(s3_target(settings))
    await AuditAnchor(engine=engine, s3=s3, bucket=settings.s3_bucket)()


async def in_catalog(
    settings: Settings, work: Any, *args: Any, begin: bool = False, as_owner: bool = False
) -> Any:
    """`await work(conn, *args)` on a fresh connection (in one transaction with `begin`), as
    the app role (or the owner); an unreachable catalog or a database error ends the command
    with a message naming it (never its password)."""
    from sqlalchemy.exc import SQLAlchemyError

    from catalog import db

    url = settings.owner_url if as_owner else settings.catalog_url
    engine = db.make_engine(url, pool_size=1)
    try:
        async with engine.begin() if begin else engine.connect() as conn:
            result = await work(conn, *args)
        if begin:  # it may have appended audit events: anchor the chain's head
            await anchor(settings, engine)
        return result
    except (OSError, SQLAlchemyError) as err:
        raise fail(f"catalog at {settings.where(url)}: {err}") from err
    finally:
        await engine.dispose()


async def temporal(settings: Settings, hint: str = "") -> Any:
    """A Temporal client with the product's converter (payload encryption) and transport
    settings; a Temporal that does not answer, or a missing key ring, ends the command."""
    from worker.temporal_client import TemporalUnreachable, connect

    try:
        return await connect(settings)
    except TemporalUnreachable as err:
        raise fail(f"{err}{hint}") from err
