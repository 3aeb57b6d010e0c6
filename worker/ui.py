"""Terminal output shared by the CLI's command groups."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)
