"""A worker SIGKILLed mid-job: a new worker finishes the job and every item is labeled once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowHandle

from activities.payloads import LabelDatasetInput, LabelDatasetResult
from catalog import db
from tests.helpers import signed, spawn_worker, stop, write_jsonl
from worker.settings import PROJECT_ROOT, Settings
from worker.temporal_client import connect

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(stack: Settings) -> Settings:
    """The session's stack on a task queue of this test's own: only the worker processes it
    starts (and kills) serve its job, never the session's in-process worker."""
    return stack.model_copy(update={"task_queue": f"dur-{uuid.uuid4().hex[:6]}"})


@pytest.fixture
def workers(stack: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:  # only the workers this test started, by their pid
        stop(proc)


def no_human_review(stack: Settings) -> str:
    """route_default with every person's outcome turned into quarantine, as a policy of its
    own in the session's policy folder: a kill then interrupts labeling, never the opening of
    reviews (whose 60 s heartbeat timeout would only slow the test down)."""
    policy = f"route_nohuman{uuid.uuid4().hex[:6]}"
    text_ = (PROJECT_ROOT / "policy_rules" / "route_default" / "v2.yaml").read_text()
    text_ = text_.replace("id: route_default", f"id: {policy}").replace("version: 2", "version: 1")
    folder = stack.policies_dir / policy
    folder.mkdir()
    (folder / "v1.yaml").write_text(text_.replace("human_review", "quarantine"))
    return policy


async def chunks_done(handle: WorkflowHandle[Any, Any]) -> int:
    """label_chunk activities completed so far, read from the workflow's history."""
    events = (await handle.fetch_history()).events
    chunk_ids = {
        e.event_id
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "label_chunk"
    }
    return sum(
        e.activity_task_completed_event_attributes.scheduled_event_id in chunk_ids
        for e in events
        if e.HasField("activity_task_completed_event_attributes")
    )


async def test_sigkill_worker_mid_job_labels_every_item_exactly_once(
    stack: Settings,
    workers: list[subprocess.Popen[bytes]],
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    texts = [r["text"] for r in gold_rows[:1200]]  # 12 chunks: the kill lands mid-job
    source = write_jsonl(tmp_path / "kill.jsonl", texts)
    dataset = f"kill{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"
    policy = no_human_review(stack)
    workers.append(spawn_worker(stack, log))
    client = await connect(stack)
    handle = await client.start_workflow(
        "LabelDataset",
        LabelDatasetInput(
            dataset=dataset,
            source=str(source),
            task="sentiment",
            policy=policy,
            chunk_size=100,
            parallelism=2,
            chunk_heartbeat_timeout_s=5,
        ),
        id=f"label:{dataset}:j1",
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )
    # Kill once a few chunks are done and an activity is running on the worker right now.
    # Read from history and describe (the server answers them), not a query: a query needs
    # a worker, and under load the first one may not be polling yet.
    done = 0
    for _ in range(1200):
        done = await chunks_done(handle)
        pending = (await handle.describe()).raw_description.pending_activities
        started = {
            p.activity_type.name
            for p in pending
            if p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        }
        if done >= 2 and "label_chunk" in started:
            break
        await asyncio.sleep(0.1)
    chunks_total = -(-len(set(texts)) // 100)
    assert 2 <= done < chunks_total, (done, log.read_text())
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].wait(timeout=10)

    workers.append(spawn_worker(stack, log))
    result = await asyncio.wait_for(handle.result(), timeout=240)

    assert result.items == len(set(texts))
    assert result.counts.total == result.items
    engine: AsyncEngine = db.make_engine(stack.catalog_url)
    try:
        async with engine.connect() as conn:
            job = {"j": f"label:{dataset}:j1"}

            async def count(sql: str) -> int:
                return int((await conn.execute(text(sql), job)).scalar_one())

            assert await count("SELECT count(*) FROM decision WHERE job_id = :j") == result.items
            assert (
                await count("SELECT count(DISTINCT item_id) FROM decision WHERE job_id = :j")
                == result.items
            )
            assert await count("SELECT count(*) FROM vote WHERE job_id = :j") == 2 * result.items
            assert (
                await count("SELECT count(*) FROM label WHERE job_id = :j")
                == result.counts.auto_accept
            )
            assert (
                await count(
                    "SELECT count(*) FROM audit_event WHERE subject = :j AND kind = 'chunk_decided'"
                )
                == chunks_total
            )
    finally:
        await engine.dispose()
    # The kill really interrupted work: some chunk ran more than once.
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2, log.read_text()[-2000:]


async def test_reviews_sent_while_no_worker_runs_are_not_lost(
    stack: Settings,
    workers: list[subprocess.Popen[bytes]],
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    from activities.payloads import ReviewStateView

    source = write_jsonl(tmp_path / "pending.jsonl", [r["text"] for r in gold_rows[400:460]])
    dataset = f"pend{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"
    workers.append(spawn_worker(stack, log))
    client = await connect(stack)
    await client.execute_workflow(
        "LabelDataset",
        LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment"),
        id=f"label:{dataset}:j1",
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )
    engine: AsyncEngine = db.make_engine(stack.catalog_url)
    try:
        async with engine.connect() as conn:
            items = [
                r[0]
                for r in await conn.execute(
                    text("SELECT item_id FROM review_task WHERE dataset = :d LIMIT 5"),
                    {"d": dataset},
                )
            ]
        assert len(items) == 5
        os.kill(workers[0].pid, signal.SIGKILL)  # reviews arrive while no worker runs
        workers[0].wait(timeout=10)
        for item in items:
            await client.get_workflow_handle(f"review:{dataset}:{item}").signal(
                "submit_review", signed("alice", "negative")
            )
        workers.append(spawn_worker(stack, log))
        for item in items:
            final = await asyncio.wait_for(
                client.get_workflow_handle(
                    f"review:{dataset}:{item}", result_type=ReviewStateView
                ).result(),
                timeout=120,
            )
            assert (final.state, final.label) == ("done", "negative")
        async with engine.connect() as conn:
            labels = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM label WHERE dataset = :d AND source = 'human' "
                        "AND is_current AND reviewers::text = '[\"alice\"]'"
                    ),
                    {"d": dataset},
                )
            ).scalar_one()
            accepted = (
                await conn.execute(
                    text("SELECT count(*) FROM review WHERE dataset = :d AND accepted"),
                    {"d": dataset},
                )
            ).scalar_one()
        assert labels == accepted == 5
    finally:
        await engine.dispose()
