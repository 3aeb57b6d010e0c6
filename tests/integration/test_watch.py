"""New data as events on the real stack: a watcher on an S3 prefix starts exactly one labeling
job per new object version (its id from the key and version id), each followed by a drift
check, across a worker restart mid-watch; a new version of a key is new data; the schedule is
created, listed and stopped through the CLI."""

from __future__ import annotations

import asyncio
import bz2
import csv
import hashlib
import json
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from activities import ids
from activities.payloads import WatchInput, WatchResult
from activities.s3 import make_s3_client
from agents.samples import corpus_path
from tests.helpers import ThreadWorker, cli
from tests.integration.reviewing import rows
from worker.main import Runtime, s3_target
from worker.settings import Settings


def jsonl(texts: list[str]) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


async def test_each_object_version_is_labeled_once_across_a_worker_restart(
    env: WorkflowEnvironment,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    texts = sorted(
        (r["text"] for r in gold_rows), key=lambda t: hashlib.sha256(t.encode()).digest()
    )
    with bz2.open(corpus_path(), "rt", encoding="utf-8", newline="") as fh:
        plots = [r["text"].strip() for r in csv.DictReader(fh) if r["category"] == "plot"]
    s3 = make_s3_client(s3_target(stack))
    prefix = f"inbox/{uuid.uuid4().hex[:8]}/"
    versions = {}
    for name, body in (("a", texts[:150]), ("b", texts[150:300]), ("c", plots)):
        put = s3.put_object(Bucket=stack.s3_bucket, Key=f"{prefix}{name}.jsonl", Body=jsonl(body))
        versions[name] = put["VersionId"]
    s3.put_object(Bucket=stack.s3_bucket, Key=f"{prefix}notes.txt", Body=b"not data")
    dataset = f"watch{uuid.uuid4().hex[:6]}"
    local = stack.model_copy(update={"task_queue": f"watch-{uuid.uuid4().hex[:6]}"})
    inp = WatchInput(bucket=stack.s3_bucket, prefix=prefix, dataset=dataset, task="sentiment")
    expected = {
        ids.watch_job_id(dataset, stack.s3_bucket, f"{prefix}{n}.jsonl", v)
        for n, v in versions.items()
    }

    async def started_jobs() -> set[str]:
        query = f'WorkflowType = "LabelDataset" AND {ids.SA_DATASET} = "{dataset}"'
        return {w.id async for w in env.client.list_workflows(query)}

    with ThreadWorker(local):
        handle = await env.client.start_workflow(
            ids.WATCH_WORKFLOW,
            inp,
            id=f"watch-run:{dataset}-1",
            task_queue=local.task_queue,
            result_type=WatchResult,
        )
        for _ in range(300):  # the first job is under way: now the worker goes away
            if await started_jobs():
                break
            await asyncio.sleep(0.1)
        assert await started_jobs()
    with ThreadWorker(local):  # a new worker process takes over the watch
        first = await asyncio.wait_for(handle.result(), 240)
        assert (first.seen, first.labeled, first.skipped, first.failed) == (3, 3, 0, 0)
        jobs = await rows(
            runtime, "SELECT id, source, status FROM job WHERE dataset = :d", d=dataset
        )
        assert {str(j[0]) for j in jobs} == expected and len(jobs) == 3
        assert all("?versionId=" in str(j[1]) and j[2] == "completed" for j in jobs)
        # Each job was followed by a drift check; the last arrival (film synopses) stands out.
        checks = await rows(
            runtime,
            "SELECT window_items, metrics FROM drift_check WHERE dataset = :d ORDER BY checked_at",
            d=dataset,
        )
        assert [c[0] for c in checks] == [150, 150, len(plots)]
        assert checks[2][1]["input.auc"] > 0.8 > checks[1][1]["input.auc"]  # type: ignore[index]

        # Nothing new: nothing labeled. A new version of a key is new data.
        again = await env.client.execute_workflow(
            ids.WATCH_WORKFLOW, inp, id=f"watch-run:{dataset}-2", task_queue=local.task_queue,
            result_type=WatchResult,
        )  # fmt: skip
        assert (again.seen, again.labeled) == (0, 0)
        s3.put_object(Bucket=stack.s3_bucket, Key=f"{prefix}a.jsonl", Body=jsonl(texts[300:360]))
        third = await env.client.execute_workflow(
            ids.WATCH_WORKFLOW, inp, id=f"watch-run:{dataset}-3", task_queue=local.task_queue,
            result_type=WatchResult,
        )  # fmt: skip
        assert (third.seen, third.labeled) == (1, 1)
    count = await rows(runtime, "SELECT count(*) FROM job WHERE dataset = :d", d=dataset)
    assert count == [(4,)]


async def test_the_watch_schedule_through_the_cli(stack: Settings, worker: ThreadWorker) -> None:
    dataset = f"watchcli{uuid.uuid4().hex[:6]}"
    uri = f"s3://{stack.s3_bucket}/inbox/{dataset}/"
    out = cli(stack, "watch", uri, "--dataset", dataset, "--task", "sentiment", "--every", "1h")
    assert out.returncode == 0 and f"({ids.watch_schedule_id(dataset)})" in out.stdout, out.stdout
    twice = cli(stack, "watch", uri, "--dataset", dataset, "--task", "sentiment")
    assert twice.returncode == 1 and f"watch stop {dataset}" in " ".join(twice.stdout.split())
    for _ in range(50):  # schedules are listed from visibility, which catches up quickly
        listed = cli(stack, "watch", "list").stdout
        if ids.watch_schedule_id(dataset) in listed:
            break
        await asyncio.sleep(0.2)
    assert f"{uri} -> {dataset}  every 1:00:00  active" in listed
    assert cli(stack, "watch", "stop", dataset).returncode == 0
    gone = cli(stack, "watch", "stop", dataset)
    assert gone.returncode == 1 and f"no watcher for {dataset}" in gone.stdout
    bad = cli(stack, "watch", uri, "--dataset", dataset, "--task", "sentimnet")
    assert bad.returncode == 1
