"""`labelfabric`: the operator's and reviewer's command line (Typer + rich).

One module per command group; the root imports a group's module only when that group runs
(or when `--help` lists it), and each module imports the heavy libraries (Temporal, the
catalog, boto3, numpy) inside the commands that need them, so `labelfabric --help` and
`task list` answer in well under a second.

Each command builds its Settings from the environment, does one thing, and exits non-zero
with a message that names the problem when it cannot.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:  # typer's own copy of click
    from typer._click.core import Command, Context

# Root command -> (module under worker.cli, attribute). `app` is a command group of its own;
# `commands` holds top-level commands. The order is the order `--help` lists them in.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("lifecycle", "commands"),
    "down": ("lifecycle", "commands"),
    "status": ("lifecycle", "commands"),
    "worker": ("lifecycle", "commands"),
    "sample": ("lifecycle", "commands"),
    "job": ("job", "app"),
    "task": ("task", "app"),
    "review": ("review", "app"),
    "reviewer": ("reviewer", "app"),
    "agent": ("agent", "app"),
    "calibrate": ("agent", "commands"),
    "eval": ("eval", "commands"),
    "explain": ("explain", "commands"),
    "policy": ("policy", "app"),
    "dataset": ("dataset", "app"),
    "drift": ("drift", "app"),
    "watch": ("watch", "app"),
    "audit": ("audit", "app"),
    "codec": ("codec", "app"),
    "db": ("db", "app"),
}


class LazyGroup(TyperGroup):
    """The root group: commands come from their modules the first time they are asked for."""

    _loaded: dict[tuple[str, str], TyperGroup] = {}

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        group = self._loaded.get((module, attr))
        if group is None:
            typer_app = getattr(importlib.import_module(f"worker.cli.{module}"), attr)
            group = typer.main.get_group(typer_app)
            self._loaded[(module, attr)] = group
        if attr == "app":
            group.name = cmd_name
            return group
        return group.commands.get(cmd_name)


def group(help: str | None = None) -> typer.Typer:
    """A command group (or, without `help`, a module's top-level commands), its help printed
    by plain click: rich's markdown and syntax highlighting would triple what `--help` costs."""
    return typer.Typer(help=help, no_args_is_help=help is not None, rich_markup_mode=None)


app = typer.Typer(cls=LazyGroup, no_args_is_help=True, rich_markup_mode=None)


@app.callback()
def root() -> None:
    """Label datasets with a fabric of agents on Temporal."""


def main() -> None:
    """The `labelfabric` entry point.

    Ends with `os._exit` once the command has run and everything is flushed: a short-lived
    process holding a Temporal client can otherwise abort while the interpreter finalizes
    ("PyGILState_Release: thread state must be current", temporalio/sdk-python#300; seen here
    on `job start` without --wait). Spans and logs are flushed first, as atexit would.
    """
    import logging
    import os
    import sys

    code = 0
    try:
        app(prog_name="labelfabric")
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    trace: Any = sys.modules.get("opentelemetry.trace")  # flushed only if a command used it
    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None) if trace else None
    if callable(shutdown):
        shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
