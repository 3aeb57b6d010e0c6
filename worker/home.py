"""Which state dir a command uses, wherever it is run from, and which stack holds a port.

The state dir (`Settings.home`) holds the embedded stack's data, logs, pid files and keys.
When it is not given (`LABELFABRIC_HOME`, `Settings(home=...)`, `worker --home`), it is the
first of:

1. `.labelfabric` in the working directory, or in the nearest parent that has one (as git
   finds `.git`), so a command run from a sub-folder of the project sees its stack;
2. the state dir named by the per-user pointer file (`$XDG_STATE_HOME/labelfabric/home`,
   default `~/.local/state/labelfabric/home`), which `labelfabric up` writes: the stack
   started last, from wherever it was started, if that folder still exists;
3. `./.labelfabric`, a new one.

`status` and `up` print which one they used and why (`describe`). Nothing here imports
more than the standard library at module level: `Settings` builds its default from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

NAME = ".labelfabric"
ENV = "LABELFABRIC_HOME"


@dataclass(frozen=True)
class HomeChoice:
    path: Path
    why: str  # ENV, "here", "parent", "pointer" or "new"


def pointer_file(env: Mapping[str, str] | None = None) -> Path:
    """The per-user file naming the state dir `labelfabric up` started last."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "labelfabric" / "home"


def read_pointer(env: Mapping[str, str] | None = None) -> Path | None:
    try:
        text = pointer_file(env).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError):
        return None
    return Path(text) if text else None


def write_pointer(home: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Record `home` as the stack started last (by `labelfabric up`); None if it cannot be
    written (a read-only home is no reason to fail `up`)."""
    path = pointer_file(env)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".home.{os.getpid()}")
        tmp.write_text(f"{Path(home).resolve()}\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        return None
    return path


def find_home(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> HomeChoice:
    """The state dir a command run in `cwd` uses (the module docstring gives the order)."""
    env = os.environ if env is None else env
    if env.get(ENV):
        return HomeChoice(Path(env[ENV]).expanduser().resolve(), ENV)
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / NAME).is_dir():
            return HomeChoice(folder / NAME, "here" if folder == here else "parent")
    pointed = read_pointer(env)
    if pointed is not None and pointed.is_dir():
        return HomeChoice(pointed.resolve(), "pointer")
    return HomeChoice(here / NAME, "new")


def default_home() -> Path:
    """`Settings.home` when nothing names it."""
    return find_home().path


def describe(home: Path, env: Mapping[str, str] | None = None) -> str:
    """One line: the state dir in use, why this one, and how to point at another."""
    env = os.environ if env is None else env
    home = Path(home).resolve()
    choice = find_home(env=env)
    why = {
        ENV: "from LABELFABRIC_HOME",
        "here": "in this directory",
        "parent": "found in a parent directory",
        "pointer": f"the stack `labelfabric up` started last ({pointer_file(env)})",
        "new": f"none here, in a parent directory or in {pointer_file(env)}",
    }.get(choice.why, "")
    if choice.path != home:
        why = "given to this process"
    return f"state dir: {home} ({why}); LABELFABRIC_HOME=DIR uses another"


# --------------------------------------------------------------------------- port holders


def state_dir_in(cmdline: list[str]) -> Path | None:
    """The labelfabric state dir a server's command line names (its data dir is inside it):
    a folder with `run/stack.lock` or `secrets.json`, at most three levels above an
    argument that is a path."""
    for arg in cmdline:
        for value in (arg, arg.partition("=")[2]):
            if not value.startswith("/"):
                continue
            path = Path(value)
            for folder in [path, *path.parents][:4]:
                if (folder / "run" / "stack.lock").exists() or (folder / "secrets.json").exists():
                    return folder
    return None


def port_holder(host: str, port: int) -> str:
    """Who listens on host:port, as far as this user may see: e.g. 'pid 123 (temporal) of
    the stack in /x/.labelfabric'; '' when unknown."""
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        conns = []
    for conn in conns:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.pid is None:
            return ""
        try:
            proc = psutil.Process(conn.pid)
            cmdline, name = proc.cmdline(), proc.name()
        except psutil.Error:
            return f"pid {conn.pid}"
        home = state_dir_in(cmdline)
        where = f" of the stack in state dir {home}" if home else ""
        return f"pid {conn.pid} ({name}){where}"
    return ""
