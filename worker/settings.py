"""Process settings: one pydantic-settings class, built in each entry point, never at import.

Every field reads ``LABELFABRIC_<FIELD>`` from the environment. The Temporal address follows
Temporal's own variable (``TEMPORAL_ADDRESS``) when it is set, so a worker can be pointed at a
cluster without learning a second name. Settings never travel in workflow payloads.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.ids import DEFAULT_TASK_QUEUE
from worker import secrets as stack_secrets
from worker.home import default_home
from worker.secrets import APP_ROLE

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELFABRIC_", extra="ignore")

    # State dir of the embedded stack: Temporal's SQLite file, PostgreSQL's data dir,
    # SeaweedFS's volumes, logs and pid files. Unset: ./.labelfabric or the nearest parent's,
    # else the one `labelfabric up` started last (worker/home.py).
    home: Path = Field(default_factory=default_home)
    host: str = "127.0.0.1"

    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_http_port: int = 7243
    temporal_metrics_port: int = 7244
    temporal_namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE

    postgres_port: int = 15432
    # When set, the catalog lives on this server and `up` starts no PostgreSQL.
    database_url: str | None = None
    # Who migrates that catalog (its owner); default database_url. The embedded stack's
    # owner and app role passwords live in the state dir (worker/secrets.py).
    migrate_database_url: str | None = None

    s3_port: int = 8333
    weed_master_port: int = 9333
    weed_volume_port: int = 9340
    weed_filer_port: int = 8888
    weed_admin_port: int = 23646
    # When set, snapshots go to this S3 endpoint and `up` starts no SeaweedFS.
    s3_endpoint_url: str | None = None
    s3_bucket: str = "labelfabric-snapshots"
    s3_region: str = "us-east-1"
    # Unset: the embedded SeaweedFS's keys from the state dir, or for another S3 the usual
    # AWS variables and files (boto3's chain).
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    # CAs an https:// S3 endpoint's certificate is checked against (PEM); unset: the system's
    # roots (or boto3's AWS_CA_BUNDLE).
    s3_ca_bundle: Path | None = None

    tasks_dir: Path = Field(default=PROJECT_ROOT / "tasks")
    roster_path: Path = Field(default=PROJECT_ROOT / "config" / "roster.yaml")
    # Put the roster's simulated reviewers (`sim:` ids, `labelfabric review bot`) on duty:
    # for benchmarks and tests of the learning loop only.
    simulated_reviewers: bool = False
    # `labelfabric review serve`: the review page.
    review_port: int = 7245
    # Dataset workflow: wait this long after a label change for more before snapshotting.
    snapshot_debounce_s: float = 0.5
    policies_dir: Path = Field(default=PROJECT_ROOT / "policy_rules")

    # Folders a job's local source may be read from (os.pathsep-separated). A workflow input
    # is written by whoever reaches Temporal, so workers read no file outside these. Empty:
    # the worker's working directory and the state dir.
    source_roots: str = ""

    # Bounded parallelism of one worker process.
    max_concurrent_activities: int = 4

    # Payload encryption (worker/codec.py): every client and worker encrypts what it hands
    # Temporal with the active key of this ring (default {home}/codec_keys.json, made by
    # `up`). Off: payloads are written in clear (histories already encrypted still decode).
    codec: bool = True
    codec_keys: Path | None = None
    # Snapshot objects sealed at rest with the same ring (formats/sealed.py). Off: new
    # snapshots are written in clear; sealed ones still read while the ring is there.
    snapshot_encryption: bool = True
    # `labelfabric codec serve` (started by `up`): Temporal's codec-server protocol for the
    # Web UI and `temporal --codec-endpoint`, behind a bearer token from the state dir.
    codec_port: int = 7246

    # Signed reviewer identity (worker/identity.py): a review counts only with a claim signed
    # by a key of this ring (default {home}/identity_keys.json, made by `up`).
    signed_reviews: bool = True
    identity_keys: Path | None = None
    # Lifetime of the claims `reviewer token` and the review page issue.
    review_token_ttl_s: int = 8 * 3600

    # Temporal beyond loopback (e.g. a Temporal Cloud namespace): TLS, mTLS and API keys,
    # read from Temporal's own variables (as the `temporal` CLI does) or these settings.
    temporal_tls: bool = False
    temporal_tls_ca: Path | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: str | None = None

    # Metrics (worker/metrics.py): a worker's Prometheus endpoint on host:metrics_port (0 =
    # none; each worker on one machine needs its own); the review page's own /metrics,
    # loopback clients only; a long CLI command's endpoint (0 = none). OTLP when
    # OTEL_EXPORTER_OTLP_ENDPOINT is set.
    metrics_port: int = 7247
    review_metrics: bool = True
    cli_metrics_port: int = 0

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def allowed_source_roots(self) -> tuple[Path, ...]:
        named = [Path(p).expanduser() for p in self.source_roots.split(os.pathsep) if p.strip()]
        return tuple(named) if named else (Path.cwd(), self.home_dir)

    @property
    def temporal_address(self) -> str:
        return os.environ.get("TEMPORAL_ADDRESS") or f"{self.host}:{self.temporal_port}"

    @property
    def codec_keys_path(self) -> Path:
        return (self.codec_keys or self.home_dir / "codec_keys.json").expanduser()

    @property
    def identity_keys_path(self) -> Path:
        return (self.identity_keys or self.home_dir / "identity_keys.json").expanduser()

    @property
    def codec_url(self) -> str:
        return f"http://{self.host}:{self.codec_port}"

    @property
    def temporal_ui_url(self) -> str:
        return f"http://{self.host}:{self.temporal_ui_port}"

    @property
    def catalog_url(self) -> str:
        """What the app connects as: on the embedded stack, the app role."""
        if self.database_url:
            return self.database_url
        return self._embedded_url(APP_ROLE, self._secret("app_password"))

    @property
    def owner_url(self) -> str:
        """Who migrates and grants: the catalog's owner."""
        if self.database_url:
            return self.migrate_database_url or self.database_url
        return self._embedded_url("postgres", self._secret("postgres_password"))

    @property
    def s3_keys(self) -> tuple[str | None, str | None]:
        if self.s3_access_key or self.s3_secret_key or self.s3_endpoint_url:
            return self.s3_access_key, self.s3_secret_key
        return self._secret("s3_access_key"), self._secret("s3_secret_key")

    @staticmethod
    def where(url: str) -> str:
        """A database URL fit to print: its password hidden."""
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)

    def _secret(self, key: str) -> str | None:
        return stack_secrets.read(self.home_dir).get(key)

    def _embedded_url(self, user: str, password: str | None) -> str:
        auth = f"{user}:{quote(password, safe='')}" if password else user
        return f"postgresql+asyncpg://{auth}@{self.host}:{self.postgres_port}/postgres"

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint_url or f"http://{self.host}:{self.s3_port}"

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def eval_policies_dir(self) -> Path:
        """Policy versions `labelfabric eval` calibrates: state, never the git tree (workers
        read them after `policies_dir`, under their own ids)."""
        return self.home_dir / "eval" / "policies"
