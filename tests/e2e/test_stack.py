"""The embedded stack against real servers: status, idempotent `up`, the versioned bucket, data
kept across `down`/`up`, a taken port reported by part and number, and Temporal's completed
workflows surviving `kill -9` of the server.

Read-only checks use the session `stack`. Destructive tests start their own stack in
`tmp_path` on shifted ports (a shift that collides with none of the session stack's ports;
+100 would put temporal-ui on the session's S3 port) and always `down` it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool
from temporalio import workflow
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.s3 import S3Client, make_s3_client
from tests.conftest import TEST_PORTS, make_test_settings
from worker import stack as stack_mod
from worker.settings import Settings

PART_NAMES = ["temporal", "temporal-ui", "postgres", "s3", "codec"]


@workflow.defn(name="StackProbe")
class StackProbe:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"done {name}"


# ------------------------------------------------------------------------------- helpers


def shifted(tmp_path: Path, shift: int) -> Settings:
    return make_test_settings(tmp_path / "home", **{k: v + shift for k, v in TEST_PORTS.items()})


@contextmanager
def own_stack(settings: Settings) -> Iterator[Settings]:
    try:
        stack_mod.up(settings)
        yield settings
    finally:
        stack_mod.down(settings)


def s3(settings: Settings) -> S3Client:
    from worker.main import s3_target

    return make_s3_client(s3_target(settings))


async def temporal_client(settings: Settings) -> Client:
    # host:port, not settings.temporal_address: a TEMPORAL_ADDRESS in the environment must not
    # point the test at another server.
    address = f"{settings.host}:{settings.temporal_port}"
    return await Client.connect(address, namespace=settings.temporal_namespace)


async def run_probes(client: Client, count: int) -> list[str]:
    """Run `count` StackProbe workflows to completion with an in-process worker."""
    queue = f"stack-test-{uuid.uuid4().hex[:8]}"
    ids = [f"stack-probe-{uuid.uuid4().hex}" for _ in range(count)]
    async with Worker(
        client,
        task_queue=queue,
        workflows=[StackProbe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        results = await asyncio.gather(
            *(
                client.execute_workflow(
                    StackProbe.run,
                    wid,
                    id=wid,
                    task_queue=queue,
                    execution_timeout=timedelta(seconds=30),
                )
                for wid in ids
            )
        )
    assert results == [f"done {wid}" for wid in ids]
    return ids


async def assert_completed(client: Client, ids: list[str]) -> None:
    for wid in ids:
        handle = client.get_workflow_handle(wid)
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        assert await handle.result() == f"done {wid}"


@asynccontextmanager
async def catalog(settings: Settings) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(settings.owner_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


def pids(statuses: list[stack_mod.PartStatus]) -> dict[str, int | None]:
    return {s.name: s.pid for s in statuses}


# ------------------------------------------------------------------- the session stack


def test_status_every_part_answers_on_loopback(stack: Settings) -> None:
    statuses = stack_mod.status(stack)
    assert [s.name for s in statuses] == PART_NAMES
    for part in statuses:
        assert part.answers, part
        if part.managed:
            assert part.pid is not None
            assert "127.0.0.1:" in part.address, part
    by_name = {s.name: s for s in statuses}
    assert by_name["temporal"].address == f"127.0.0.1:{stack.temporal_port}"
    assert by_name["temporal-ui"].address == f"http://127.0.0.1:{stack.temporal_ui_port}"
    if by_name["postgres"].managed:
        assert by_name["postgres"].address == f"postgresql://127.0.0.1:{stack.postgres_port}"
    if by_name["s3"].managed:
        assert by_name["s3"].address == f"http://127.0.0.1:{stack.s3_port}"
    assert by_name["codec"].address == f"http://127.0.0.1:{stack.codec_port}"


def test_servers_listen_on_loopback_only(stack: Settings) -> None:
    for part in stack_mod.status(stack):
        if part.pid is None:
            continue
        listening = [
            c.laddr
            for c in psutil.Process(part.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening, part
        assert {addr.ip for addr in listening} == {"127.0.0.1"}, (part.name, listening)


def test_up_again_is_harmless(stack: Settings) -> None:
    before = stack_mod.status(stack)
    again = stack_mod.up(stack)
    assert pids(again) == pids(before)
    assert all(s.answers for s in again)
    if os.geteuid() == 0:
        # PostgreSQL runs as its own user and must still reach its data dir through the
        # private state dir (once, a second `up` took that away: it panicked at checkpoint).
        assert stat.S_IMODE(stack.home_dir.stat().st_mode) & 0o001
        pgdata = stack.home_dir / "postgres"
        owner = pgdata.stat().st_uid
        assert owner != 0
        probe = subprocess.run(
            ["test", "-r", str(pgdata / "global" / "pg_control")],
            user=owner,
            check=False,
        )
        assert probe.returncode == 0


def test_bucket_is_versioned(stack: Settings) -> None:
    versioning = s3(stack).get_bucket_versioning(Bucket=stack.s3_bucket)
    assert versioning.get("Status") == "Enabled"


def test_two_puts_keep_two_versions(stack: Settings) -> None:
    client, key = s3(stack), f"stack-test/{uuid.uuid4().hex}.json"
    first = client.put_object(Bucket=stack.s3_bucket, Key=key, Body=b"first")["VersionId"]
    second = client.put_object(Bucket=stack.s3_bucket, Key=key, Body=b"second")["VersionId"]
    assert first and second and first != second
    old = client.get_object(Bucket=stack.s3_bucket, Key=key, VersionId=first)
    assert old["Body"].read() == b"first"
    assert client.get_object(Bucket=stack.s3_bucket, Key=key)["Body"].read() == b"second"


async def test_search_attributes_registered(stack: Settings) -> None:
    client = await temporal_client(stack)
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=stack.temporal_namespace)
    )
    for name in stack_mod.SEARCH_ATTRIBUTES:
        assert name in response.custom_attributes


# ------------------------------------------------------------------ stacks of their own


@pytest.mark.slow
async def test_down_then_up_keeps_data(tmp_path: Path) -> None:
    settings = shifted(tmp_path, 20)
    table = f"stack_test_{uuid.uuid4().hex[:8]}"
    key = f"stack-test/{uuid.uuid4().hex}.txt"
    with own_stack(settings):
        async with catalog(settings) as conn:
            await conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)"))
            await conn.execute(text(f"INSERT INTO {table} VALUES (1, 'kept')"))
        bucket = s3(settings)
        v1 = bucket.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"v1")["VersionId"]
        bucket.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"v2")
        ids = await run_probes(await temporal_client(settings), 1)

        stopped = await asyncio.to_thread(stack_mod.down, settings)
        managed = {s.name for s in stack_mod.status(settings) if s.managed}
        assert set(stopped) == managed - {"temporal-ui"}
        assert not any(s.answers for s in stack_mod.status(settings) if s.managed)

        await asyncio.to_thread(stack_mod.up, settings)
        async with catalog(settings) as conn:
            rows = await conn.execute(text(f"SELECT note FROM {table}"))
            assert rows.scalars().all() == ["kept"]
            await conn.execute(text(f"DROP TABLE {table}"))
        bucket = s3(settings)
        old = bucket.get_object(Bucket=settings.s3_bucket, Key=key, VersionId=v1)
        assert old["Body"].read() == b"v1"
        assert bucket.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read() == b"v2"
        await assert_completed(await temporal_client(settings), ids)


@pytest.mark.slow
def test_port_in_use_is_reported_and_left_alone(tmp_path: Path) -> None:
    settings = shifted(tmp_path, 40)
    if settings.database_url is None:
        part, port = "postgres", settings.postgres_port
    else:
        part, port = "temporal", settings.temporal_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        try:
            with pytest.raises(stack_mod.StackError) as raised:
                stack_mod.up(settings)
            message = str(raised.value)
            assert part in message and str(port) in message, message
            assert f"LABELFABRIC_{part.upper()}_PORT" in message, message
            # Nothing was started (ports are checked before anything starts) ...
            assert not any(s.pid for s in stack_mod.status(settings)), stack_mod.status(settings)
            assert stack_mod.down(settings) == []
        finally:
            stack_mod.down(settings)
        # ... and the process holding the port still serves it.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass


@pytest.mark.slow
async def test_completed_workflows_survive_kill_9(tmp_path: Path) -> None:
    settings = shifted(tmp_path, 60)
    with own_stack(settings):
        ids = await run_probes(await temporal_client(settings), 5)
        before = pids(stack_mod.status(settings))
        victim = before["temporal"]
        assert victim is not None

        proc = psutil.Process(victim)
        os.kill(victim, signal.SIGKILL)
        proc.wait(10)  # reaps it: we are its parent
        assert not stack_mod.status(settings)[0].answers

        after = pids(await asyncio.to_thread(stack_mod.up, settings))
        assert after["temporal"] not in (None, victim)
        # The other parts were running and are left alone.
        assert after["postgres"] == before["postgres"] and after["s3"] == before["s3"]
        await assert_completed(await temporal_client(settings), ids)


def test_storage_needs_the_stacks_credentials(stack: Settings) -> None:
    """Any local process reaches the loopback ports; only the state dir's keys open them."""
    import stat

    import boto3
    import botocore
    from botocore.config import Config
    from botocore.exceptions import ClientError

    home = stack.home_dir
    # Others may at most pass through (the PostgreSQL server's user, when run as root).
    assert stat.S_IMODE(home.stat().st_mode) & 0o066 == 0
    assert stat.S_IMODE((home / "secrets.json").stat().st_mode) == 0o600
    # What the servers wrote is private: logs, pid files and Temporal's SQLite are 0600,
    # and no one else may list or enter the S3 volumes' folders.
    files = [p for d in ("logs", "run") for p in (home / d).iterdir() if p.is_file()]
    files += list(home.glob("temporal.db*"))
    assert len(files) > 5
    assert not [p for p in files if p.stat().st_mode & 0o044]
    folders = [home / "s3", *(p for p in (home / "s3").rglob("*") if p.is_dir())]
    assert not [p for p in folders if p.stat().st_mode & 0o077]
    key = f"probe/{uuid.uuid4().hex}"
    s3(stack).put_object(Bucket=stack.s3_bucket, Key=key, Body=b"kept")
    strangers = {
        "anonymous": Config(signature_version=botocore.UNSIGNED),
        "a guessed key": None,
    }
    for who, config in strangers.items():
        client = boto3.client(
            "s3",
            endpoint_url=stack.s3_url,
            region_name=stack.s3_region,
            aws_access_key_id="labelfabric",
            aws_secret_access_key="labelfabric",
            config=config,
        )
        for call in (
            lambda c=client: c.list_object_versions(Bucket=stack.s3_bucket, Prefix=key),
            lambda c=client: c.delete_object(Bucket=stack.s3_bucket, Key=key),
        ):
            with pytest.raises(ClientError) as info:
                call()
            code = info.value.response["Error"]["Code"]
            assert code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"), who
    assert s3(stack).get_object(Bucket=stack.s3_bucket, Key=key)["Body"].read() == b"kept"

    async def sql(url: str, statement: str) -> object:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                return (await conn.execute(text(statement))).scalar()
        finally:
            await engine.dispose()

    no_password = f"postgresql+asyncpg://postgres@{stack.host}:{stack.postgres_port}/postgres"
    with pytest.raises(Exception, match="password"):
        asyncio.run(sql(no_password, "SELECT 1"))
    # The app's own role: it may read and append, but cannot switch the audit trigger off.
    assert "labelfabric_app" in stack.catalog_url
    assert asyncio.run(sql(stack.catalog_url, "SELECT current_user")) == "labelfabric_app"
    for statement in ("SET session_replication_role = replica", "DELETE FROM audit_event"):
        with pytest.raises(Exception, match="permission denied"):
            asyncio.run(sql(stack.catalog_url, statement))
