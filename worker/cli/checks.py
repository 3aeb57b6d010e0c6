"""What a command checks before it starts anything: the names it is given exist (with a
"did you mean" for a typo), and a local source can be read.

A worker checks all of this again (it may see other files than the client does, and a raw
`temporal workflow start` skips the client); checking here first turns a job that would
fail a moment after "started" into an error naming the fix, before any workflow exists.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from worker.cli.console import fail

if TYPE_CHECKING:
    from agents.tasks import TaskSpec
    from policy_rules.engine import Policy
    from worker.settings import Settings


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a known name is close to `name`, else ''."""
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def task(settings: Settings, name: str) -> TaskSpec:
    from rich.markup import escape

    from agents.tasks import TaskError, load_task

    try:
        return load_task(settings.tasks_dir, name)
    except TaskError as err:
        raise fail(escape(str(err))) from err


def agents(spec: TaskSpec, names: list[str] | None) -> None:
    known = [a.name for a in spec.agents]
    if names and len(set(names)) != len(names):
        raise fail(f"an agent is named twice: {', '.join(names)}")
    for name in names or []:
        if name not in known:
            raise fail(
                f"task {spec.name!r} has no agent {name!r}{did_you_mean(name, known)}; its "
                f"agents: {', '.join(known)}"
            )


def policy_folders(settings: Settings) -> tuple[Path, ...]:
    """Where policies are read, as a worker reads them: the released ones, then eval's."""
    return (settings.policies_dir, settings.eval_policies_dir)


def policy(settings: Settings, ref: str, kind: str | None = None) -> Policy:
    """The policy `ref` names (`ID` or `ID@V`), of `kind` when given."""
    from rich.markup import escape

    from policy_rules.engine import Policy, PolicyError
    from policy_rules.store import folder_of

    folders = policy_folders(settings)
    try:
        found = Policy.load(folder_of(folders, ref), ref)
    except PolicyError as err:
        raise fail(escape(str(err))) from err
    if kind is not None and found.kind != kind:
        raise fail(
            f"{found.ref} is a {found.kind} policy: a job needs a routing policy (kind: route)"
            if kind == "route"
            else f"{found.ref} is a {found.kind} policy: this needs a {kind} policy"
        )
    return found


def source(raw: str) -> str:
    """A job's source as the worker should get it: an absolute path to a readable regular
    file, or a well-formed `s3://bucket/key`, in a format the worker reads."""
    from rich.markup import escape

    from formats.sources import SourceError, parse_s3_uri, source_format

    if raw.startswith("s3://"):
        try:
            parse_s3_uri(raw)
        except SourceError as err:
            raise fail(escape(str(err))) from err
        value = raw
    else:
        path = Path(raw).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "is not a file"
            raise fail(escape(f"source not found: {raw} {what}"))
        if not os.access(path, os.R_OK):
            raise fail(escape(f"source {raw} cannot be read (permission denied)"))
        value = str(path.resolve())
    try:
        source_format(value)
    except SourceError as err:
        raise fail(escape(str(err))) from err
    return value
