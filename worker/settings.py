"""Process settings: one pydantic-settings class, built in each entry point, never at import.

Every field reads ``LABELFABRIC_<FIELD>`` from the environment. The Temporal address follows
Temporal's own variable (``TEMPORAL_ADDRESS``) when it is set, so a worker can be pointed at a
cluster without learning a second name. Settings never travel in workflow payloads.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELFABRIC_", extra="ignore")

    # State dir of the embedded stack: Temporal's SQLite file, PostgreSQL's data dir,
    # SeaweedFS's volumes, logs and pid files.
    home: Path = Field(default=Path(".labelfabric"))
    host: str = "127.0.0.1"

    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_http_port: int = 7243
    temporal_metrics_port: int = 7244
    temporal_namespace: str = "default"
    task_queue: str = "labeling"

    postgres_port: int = 15432
    # When set, the catalog lives on this server and `up` starts no PostgreSQL.
    database_url: str | None = None

    s3_port: int = 8333
    weed_master_port: int = 9333
    weed_volume_port: int = 9340
    weed_filer_port: int = 8888
    weed_admin_port: int = 23646
    # When set, snapshots go to this S3 endpoint and `up` starts no SeaweedFS.
    s3_endpoint_url: str | None = None
    s3_bucket: str = "labelfabric-snapshots"
    s3_region: str = "us-east-1"
    # SeaweedFS in its default mode accepts any key; a real S3 reads the usual AWS variables.
    s3_access_key: str = "labelfabric"
    s3_secret_key: str = "labelfabric"

    tasks_dir: Path = Field(default=PROJECT_ROOT / "tasks")
    roster_path: Path = Field(default=PROJECT_ROOT / "config" / "roster.yaml")
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
    def temporal_ui_url(self) -> str:
        return f"http://{self.host}:{self.temporal_ui_port}"

    @property
    def catalog_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"postgresql+asyncpg://postgres@{self.host}:{self.postgres_port}/postgres"

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint_url or f"http://{self.host}:{self.s3_port}"

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"
