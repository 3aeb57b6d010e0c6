"""End to end, with real worker processes: a watcher on an S3 prefix with three new objects,
the last one drifted, gives three jobs and one drift action (a relabel, whose job re-decides
the window's agent-labeled items), and no object is labeled twice although the worker is
SIGKILLed mid-watch."""

from __future__ import annotations

import asyncio
import bz2
import csv
import hashlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from activities import ids
from activities.payloads import WatchInput, WatchResult
from activities.s3 import make_s3_client
from agents.samples import corpus_path
from catalog import db
from tests.helpers import spawn_worker, stop
from worker.main import s3_target
from worker.settings import Settings
from worker.temporal_client import connect

pytestmark = pytest.mark.slow

RELABEL_ON_NEW_TEXT = """\
id: {name}
version: 1
kind: drift
inputs:
  window.items: int
  reference.items: int
  input.auc: double
params:
  min_items: 20
  max_auc: 0.8
rules:
  - id: too_small
    when: window.items < params.min_items || reference.items < params.min_items
    outcome: none
  - id: new_text
    when: input.auc > params.max_auc
    outcome: relabel
default:
  outcome: none
"""


@pytest.fixture
def stack(stack: Settings) -> Settings:
    return stack.model_copy(update={"task_queue": f"wkill-{uuid.uuid4().hex[:6]}"})


@pytest.fixture
def workers(stack: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:  # only the workers this test started, by their pid
        stop(proc)


async def test_a_watch_survives_a_sigkill_and_labels_each_object_once(
    stack: Settings,
    workers: list[subprocess.Popen[bytes]],
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    policy = f"drift_e2e_{uuid.uuid4().hex[:6]}"
    (stack.policies_dir / policy).mkdir()
    (stack.policies_dir / policy / "v1.yaml").write_text(RELABEL_ON_NEW_TEXT.format(name=policy))
    texts = sorted(
        (r["text"] for r in gold_rows), key=lambda t: hashlib.sha256(t.encode()).digest()
    )
    with bz2.open(corpus_path(), "rt", encoding="utf-8", newline="") as fh:
        plots = [r["text"].strip() for r in csv.DictReader(fh) if r["category"] == "plot"]
    s3 = make_s3_client(s3_target(stack))
    prefix = f"inbox/{uuid.uuid4().hex[:8]}/"
    for name, body in (("a", texts[1000:1300]), ("b", texts[1300:1400]), ("c", plots)):
        data = "".join(json.dumps({"text": t}) + "\n" for t in body).encode()
        s3.put_object(Bucket=stack.s3_bucket, Key=f"{prefix}{name}.jsonl", Body=data)
    dataset = f"wkill{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"
    workers.append(spawn_worker(stack, log))
    client = await connect(stack)
    inp = WatchInput(
        bucket=stack.s3_bucket, prefix=prefix, dataset=dataset, task="sentiment",
        drift_policy=policy,
    )  # fmt: skip
    handle = await client.start_workflow(
        ids.WATCH_WORKFLOW, inp, id=f"watch-run:{dataset}", task_queue=stack.task_queue,
        result_type=WatchResult,
    )  # fmt: skip
    # Kill the worker while the first object's job is labeling.
    query = f'WorkflowType = "LabelDataset" AND {ids.SA_DATASET} = "{dataset}"'
    for _ in range(600):
        if [w async for w in client.list_workflows(query)]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(log.read_text())
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].wait(timeout=10)
    workers.append(spawn_worker(stack, log))

    result = await asyncio.wait_for(handle.result(), timeout=300)
    assert (result.seen, result.labeled, result.skipped, result.failed) == (3, 3, 0, 0)
    engine = db.make_engine(stack.catalog_url)
    try:
        async with engine.connect() as conn:

            async def q(sql: str, **params: object) -> list[tuple[object, ...]]:
                return [tuple(r) for r in await conn.execute(text(sql), params)]

            jobs = await q(
                "SELECT id, source, reason FROM job WHERE dataset = :d ORDER BY started_at",
                d=dataset,
            )
            watched = [j for j in jobs if j[2] is None]
            keys = [str(j[1]).split("?")[0].rsplit("/", 1)[-1] for j in watched]
            assert sorted(keys) == ["a.jsonl", "b.jsonl", "c.jsonl"]  # each object once
            checks = await q(
                "SELECT id, action FROM drift_check WHERE dataset = :d ORDER BY checked_at",
                d=dataset,
            )
            assert [c[1] for c in checks] == ["none", "none", "relabel"]  # one drift action
            [relabel] = [j for j in jobs if j[2] is not None]
            assert relabel[2] == f"drift:{checks[2][0]}"
    finally:
        await engine.dispose()
    # The relabel job runs on its own after the watch: wait for it, then its items are
    # re-decided under it.
    done = await asyncio.wait_for(client.get_workflow_handle(str(relabel[0])).result(), 240)
    engine = db.make_engine(stack.catalog_url)
    try:
        async with engine.connect() as conn:
            decided = await conn.scalar(
                text("SELECT count(DISTINCT item_id) FROM decision WHERE job_id = :j"),
                {"j": relabel[0]},
            )
    finally:
        await engine.dispose()
    assert decided == done["items"] > 0  # type: ignore[index]
