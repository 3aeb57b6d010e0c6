"""Tables that fit the terminal (80 columns, or piped), and `--json` output.

A command describes its rows once, as dicts of JSON values, and its columns as `Col`s; `show`
prints them and `emit_json` prints the same rows for machines. Two kinds of column:

- fixed (`wrap=False`): ids, versions, dates, numbers. Never cut and never split: a column
  is as wide as its widest value.
- wrapping (`wrap=True`): lists and free text. Wrapped between words, never inside one.

`show` sizes every column itself (rich would crop or fold a value it finds too wide): when
the fixed columns at full width and the wrapping ones at their longest word fit, it is a
table; when not, each row is printed as a block of `name  value` lines, one value a line,
never cut. `emit_json` writes one JSON document to stdout and nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from worker.cli.console import console

JSON_HELP = "Print JSON (stable keys) and nothing else."


@dataclass(frozen=True)
class Col:
    key: str  # the row's key (the same as in --json)
    header: str = ""  # default: the key
    wrap: bool = False
    right: bool = False  # numbers
    fmt: Callable[[Any], str] | None = None  # value -> text (default: str, "" for None)
    cell: Callable[[Mapping[str, Any]], str] | None = None  # the whole row -> text

    def text(self, row: Mapping[str, Any]) -> str:
        from datetime import datetime

        if self.cell is not None:
            return self.cell(row)
        value = row.get(self.key)
        if self.fmt is not None:
            return self.fmt(value)
        if value is None:
            return ""
        if isinstance(value, datetime):
            return f"{value:%Y-%m-%d %H:%M}"
        if isinstance(value, list | tuple):
            return ", ".join(map(str, value))
        return str(value)

    @property
    def title(self) -> str:
        return self.header or self.key


def _words(text: str) -> list[str]:
    return text.split() or [""]


def _width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.splitlines()), default=0)


def widths(cols: Sequence[Col], cells: list[list[str]], total: int) -> list[int] | None:
    """Each column's width so the table is at most `total` wide, or None when it cannot be
    without cutting a fixed value or a word."""
    from rich.cells import cell_len

    natural, least = [], []
    for i, col in enumerate(cols):
        values = [row[i] for row in cells]
        full = max([_width(col.title), *(_width(v) for v in values)])
        if col.wrap:
            word = max(cell_len(w) for v in [col.title, *values] for w in _words(v))
            least.append(max(word, 1))
        else:
            least.append(full)
        natural.append(full)
    room = total - (3 * len(cols) + 1)  # a border and a space either side of each cell
    if sum(natural) <= room:
        return natural
    if sum(least) > room:
        return None
    got = list(least)
    spare = room - sum(least)
    want = [n - m for n, m in zip(natural, least, strict=True)]
    wanted = sum(want)
    for i, w in enumerate(want):  # the space left, shared by how much each column wants
        got[i] += w * spare // wanted
    return got


def show(
    title: str,
    cols: Sequence[Col],
    rows: Iterable[Mapping[str, Any]],
    *,
    empty: str = "",
    width: int | None = None,
    header: bool = True,
) -> None:
    """Print `rows` as a table that fits the console (or as blocks when none would)."""
    from rich.table import Table
    from rich.text import Text

    rows = list(rows)
    if not rows and empty:
        console.print(Text(empty), soft_wrap=True)
        return
    cells = [[col.text(row) for col in cols] for row in rows]
    if not header:
        cols = [Col(c.key, " ", wrap=c.wrap, right=c.right, fmt=c.fmt, cell=c.cell) for c in cols]
    sizes = widths(cols, cells, width or console.width)
    if sizes is None:
        _blocks(title, cols, cells)
        return
    if title and not header:
        console.print(Text(title, style="italic"), soft_wrap=True)
    table = Table(title=Text(title) if title and header else None, show_header=header)
    for col, size in zip(cols, sizes, strict=True):
        table.add_column(
            Text(col.title),
            width=size,
            no_wrap=not col.wrap,
            overflow="fold",
            justify="right" if col.right else "left",
        )
    for row in cells:
        table.add_row(*(Text(v) for v in row))
    console.print(table)


def _blocks(title: str, cols: Sequence[Col], cells: list[list[str]]) -> None:
    """One block per row, `name  value` a line: what a table too wide for the console
    becomes. Fixed values are printed whole (the terminal may wrap them, nothing cuts
    them); text is wrapped between words under its first line."""
    import textwrap

    from rich.text import Text

    name = max(len(c.title) for c in cols)
    room = max(20, console.width - name - 2)
    if title:
        console.print(Text(title, style="italic"), soft_wrap=True)
    for n, row in enumerate(cells, start=1):
        console.print(Text(f"-- {n} " + "-" * max(0, min(console.width, 80) - 5 - len(str(n)))))
        for col, value in zip(cols, row, strict=True):
            if not value:
                continue
            lines = (
                textwrap.wrap(value, room, break_long_words=False, break_on_hyphens=False)
                if col.wrap
                else [value]
            ) or [value]
            console.print(Text(f"{col.title:<{name}}  {lines[0]}"), soft_wrap=True)
            for more in lines[1:]:
                console.print(Text(f"{'':<{name}}  {more}"), soft_wrap=True)


def pairs(title: str, items: Iterable[tuple[str, Any]]) -> None:
    """A summary, `name  value` a row: a two-column table under its title when it fits the
    console, else aligned lines printed whole (a long S3 key or URL is never cut)."""
    from rich.text import Text

    rows = [{"name": k, "value": "" if v is None else str(v)} for k, v in items]
    cols = [Col("name", " "), Col("value", " ")]
    if widths(cols, [[r["name"], r["value"]] for r in rows], console.width) is not None:
        show(title, cols, rows, header=False)
        return
    name = max((len(r["name"]) for r in rows), default=0)
    if title:
        console.print(Text(title, style="italic"), soft_wrap=True)
    for r in rows:
        console.print(Text(f"  {r['name']:<{name}}  {r['value']}"), soft_wrap=True)


def line(text: str) -> None:
    """A line printed whole, never wrapped nor styled (a link, an id to copy)."""
    from rich.text import Text

    console.print(Text(text), soft_wrap=True)


def _default(value: Any) -> Any:
    from datetime import date, datetime
    from pathlib import Path

    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "_asdict"):
        return value._asdict()
    return str(value)


def emit_json(doc: Any) -> None:
    """`doc` as one JSON document on stdout (dates in ISO 8601), and nothing else."""
    import json

    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False, default=_default) + "\n")
    sys.stdout.flush()


def interactive() -> bool:
    """Whether stdout is a terminal: progress is shown only there."""
    return bool(console.is_terminal)


@contextmanager
def status(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner with `message` on a terminal, and a function that changes the message;
    nothing at all when piped."""
    if not interactive():
        yield lambda _message: None
        return
    with console.status(message) as spinner:
        yield lambda text: spinner.update(text)
