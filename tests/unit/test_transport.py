"""Encryption in transit, as configured: Temporal's TLS, mTLS and API key
(worker/temporal_client.py), libpq's sslmode in a catalog URL (catalog/engine.py), and an
https S3 endpoint checked against a CA bundle (activities/s3.py). The PostgreSQL server side
is tests/e2e/test_pg_tls.py."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from activities.s3 import S3Target, make_s3_client
from catalog.engine import make_engine
from tests.certs import Certs, issue
from worker.settings import Settings
from worker.stack import s3_target
from worker.temporal_client import TemporalUnreachable, api_key, tls_config

TEMPORAL_VARS = (
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_API_KEY",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in TEMPORAL_VARS:
        monkeypatch.delenv(var, raising=False)
    for var in [v for v in list(__import__("os").environ) if v.startswith("LABELFABRIC_")]:
        monkeypatch.delenv(var)
    return monkeypatch


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return issue(tmp_path_factory.mktemp("tls"))


# --- Temporal ---------------------------------------------------------------------------


def test_plain_loopback_by_default(clean_env: pytest.MonkeyPatch) -> None:
    assert tls_config(Settings()) is False and api_key(Settings()) is None


def test_an_api_key_alone_turns_tls_on_with_the_system_roots(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = Settings(temporal_api_key="secret")
    assert tls_config(settings) is True and api_key(settings) == "secret"
    clean_env.setenv("TEMPORAL_API_KEY", "from-env")
    assert tls_config(Settings()) is True and api_key(Settings()) == "from-env"


def test_temporal_tls_from_the_variable_or_the_setting(clean_env: pytest.MonkeyPatch) -> None:
    assert tls_config(Settings(temporal_tls=True)) is True
    clean_env.setenv("TEMPORAL_TLS", "true")
    assert tls_config(Settings()) is True


def test_a_private_ca_and_server_name(clean_env: pytest.MonkeyPatch, certs: Certs) -> None:
    got = tls_config(Settings(temporal_tls_ca=certs.ca, temporal_tls_server_name="temporal.lan"))
    assert isinstance(got, TLSConfig)
    assert got.server_root_ca_cert == certs.ca.read_bytes()
    assert got.domain == "temporal.lan" and got.client_cert is None


def test_mtls_needs_both_certificate_and_key(clean_env: pytest.MonkeyPatch, certs: Certs) -> None:
    with pytest.raises(TemporalUnreachable, match="needs both a client certificate and its key"):
        tls_config(Settings(temporal_tls_cert=certs.cert))
    with pytest.raises(TemporalUnreachable, match="needs both"):
        tls_config(Settings(temporal_tls_key=certs.key))
    got = tls_config(Settings(temporal_tls_cert=certs.cert, temporal_tls_key=certs.key))
    assert isinstance(got, TLSConfig)
    assert got.client_cert == certs.cert.read_bytes()
    assert got.client_private_key == certs.key.read_bytes()


def test_temporals_own_variables_are_honoured(clean_env: pytest.MonkeyPatch, certs: Certs) -> None:
    """As for a Temporal Cloud namespace with mTLS, configured the way the `temporal` CLI is."""
    clean_env.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(certs.cert))
    clean_env.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(certs.key))
    clean_env.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.ca))
    got = tls_config(Settings())
    assert isinstance(got, TLSConfig)
    assert got.client_cert == certs.cert.read_bytes()
    assert got.server_root_ca_cert == certs.ca.read_bytes()


def test_an_unreadable_file_is_named(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TemporalUnreachable, match=f"TEMPORAL_TLS_SERVER_CA_CERT_PATH.*{missing}"):
        tls_config(Settings(temporal_tls_ca=missing))


# --- PostgreSQL: libpq's TLS parameters reach asyncpg -----------------------------------


async def test_sslmode_and_sslrootcert_in_the_catalog_url_reach_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg reads them before it dials, so what it refuses shows they arrived: verify-full
    with no root certificate at all names libpq's default file; with `sslrootcert` it opens
    that file instead; a mode that does not exist is named."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt
    for var in ("PGSSLMODE", "PGSSLROOTCERT"):
        monkeypatch.delenv(var, raising=False)
    base = "postgresql+asyncpg://app:pw@127.0.0.1:1/labels"
    cases: list[tuple[str, type[BaseException], str | None]] = [
        ("sslmode=verify-full", Exception, "root certificate file .*root.crt.* does not exist"),
        (f"sslmode=verify-full&sslrootcert={tmp_path / 'ca.pem'}", FileNotFoundError, None),
        ("sslmode=sometimes", Exception, "sslmode.*must be one of"),
    ]
    for query, kind, message in cases:
        engine = make_engine(f"{base}?{query}")
        assert "sslmode" not in engine.url.query  # moved into the driver's DSN
        try:
            with pytest.raises(kind, match=message):
                async with engine.connect():
                    pass
        finally:
            await engine.dispose()


# --- S3 over https ----------------------------------------------------------------------


class _Bucket(http.server.BaseHTTPRequestHandler):
    """Answers HEAD /bucket with 200, as an S3 endpoint does for a bucket that exists."""

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("x-amz-bucket-region", "us-east-1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_s3(certs: Certs, clean_env: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "AWS_CA_BUNDLE"):
        clean_env.delenv(var, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Bucket)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_endpoint_is_checked_against_the_ca_bundle(
    https_s3: str, certs: Certs, tmp_path: Path
) -> None:
    from botocore.exceptions import SSLError

    settings = Settings(
        s3_endpoint_url=https_s3, s3_ca_bundle=certs.ca, s3_access_key="a", s3_secret_key="s"
    )
    target = s3_target(settings)
    assert target.ca_bundle == str(certs.ca) and target.endpoint_url.startswith("https://")
    make_s3_client(target).head_bucket(Bucket="labelfabric-snapshots")
    # Without the bundle, or with another CA's, the server's certificate is refused.
    for bundle in (None, str(issue(tmp_path / "other").ca)):
        refused = S3Target(
            endpoint_url=https_s3, bucket="b", access_key="a", secret_key="s", ca_bundle=bundle
        )
        with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            make_s3_client(refused).head_bucket(Bucket="labelfabric-snapshots")
