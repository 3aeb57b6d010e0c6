"""The operator's path end to end: CLI and Temporal CLI against the embedded stack, with a
worker process, exactly as the README shows them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from activities.payloads import LabelDatasetResult
from activities.s3 import make_s3_client
from tests.helpers import claim, cli, settings_env, write_jsonl
from worker.main import s3_target
from worker.secrets import read as read_secrets
from worker.settings import PROJECT_ROOT, Settings
from worker.stack import find_binary
from worker.temporal_client import connect

pytestmark = pytest.mark.slow


def test_status_lists_every_part_answering(stack: Settings) -> None:
    out = cli(stack, "status")
    assert out.returncode == 0, out.stdout + out.stderr
    for part in ("temporal", "postgres", "s3"):
        assert part in out.stdout
    assert f"127.0.0.1:{stack.temporal_port}" in out.stdout


def test_task_list_shows_the_sample_task(stack: Settings) -> None:
    out = cli(stack, "task", "list")
    assert out.returncode == 0, out.stderr
    assert "sentiment" in out.stdout and "positive" in out.stdout and "tfidf_logreg" in out.stdout


def test_job_start_wait_prints_summary_and_snapshot_version(
    stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "cli.jsonl", [r["text"] for r in gold_rows[:120]])
    dataset = f"cli{uuid.uuid4().hex[:6]}"
    out = cli(
        stack,
        "job",
        "start",
        str(source),
        "--dataset",
        dataset,
        "--task",
        "sentiment",
        "--job",
        "j1",
        "--wait",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"label:{dataset}:j1" in out.stdout
    assert f"{dataset}@1" in out.stdout
    # The version id printed is a real object version of the snapshot key.
    match = re.search(r"S3 version id\s*│\s*(\S+)", out.stdout)
    assert match, out.stdout
    s3 = make_s3_client(s3_target(stack))
    head = s3.head_object(
        Bucket=stack.s3_bucket, Key=f"datasets/{dataset}/labels.jsonl", VersionId=match[1]
    )
    assert head["Metadata"]["labelfabric-job"] == f"label:{dataset}:j1"
    listed = subprocess.run(
        [
            str(find_binary("temporal")),
            "workflow",
            "list",
            "--address",
            stack.temporal_address,
            "--query",
            f'WorkflowType="LabelDataset" AND Dataset="{dataset}"',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"label:{dataset}:j1" in listed.stdout, listed.stdout + listed.stderr


def test_job_start_refuses_a_missing_source(stack: Settings) -> None:
    out = cli(stack, "job", "start", "/no/such/file.jsonl", "--dataset", "d", "--task", "sentiment")
    assert out.returncode == 1
    assert "source not found: /no/such/file.jsonl" in out.stdout


def test_job_start_refuses_a_bad_dataset_name_before_starting(
    stack: Settings, tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "x.jsonl", ["fine"])
    out = cli(stack, "job", "start", str(source), "--dataset", "a/../b", "--task", "sentiment")
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "dataset name 'a/../b' is not valid" in " ".join(out.stdout.split())


def test_job_failure_is_reported_with_its_cause(stack: Settings, cli_worker: None) -> None:
    # A readable file outside the workers' source roots (the temp dir and the state dir; a
    # checkout may itself live under /tmp): only the worker refuses it (an unknown task is
    # refused before the start: tests/unit/test_cli_checks.py).
    outside = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path.home()
    assert not outside.is_relative_to(tempfile.gettempdir())
    source = outside / f"labelfabric-outside-{uuid.uuid4().hex[:8]}.jsonl"
    source.write_text('{"text": "a film"}\n')
    try:
        out = cli(
            stack, "job", "start", str(source), "--dataset", "d", "--task", "sentiment", "--wait"
        )
    finally:
        source.unlink()
    assert out.returncode == 1
    assert "outside the workers' source roots" in " ".join(out.stdout.split()), out.stdout


async def test_temporal_cli_start_as_in_the_readme(
    stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "raw.jsonl", [r["text"] for r in gold_rows[:50]])
    dataset = f"raw{uuid.uuid4().hex[:6]}"
    wid = f"label:{dataset}:raw1"
    payload = {
        "dataset": dataset,
        "source": str(source),
        "task": "sentiment",
        "policy": "route_default",
    }
    started = await asyncio.to_thread(
        subprocess.run,
        [
            str(find_binary("temporal")),
            "workflow",
            "start",
            "--address",
            stack.temporal_address,
            "--type",
            "LabelDataset",
            "--task-queue",
            stack.task_queue,
            "--workflow-id",
            wid,
            "--input",
            json.dumps(payload),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    client = await connect(stack)
    result = await client.get_workflow_handle(wid, result_type=LabelDatasetResult).result()
    assert result.items == 50 and result.snapshot.version == 1


def test_job_start_warns_when_no_worker_polls(stack: Settings, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "idle.jsonl", ["fine"])
    idle = stack.model_copy(update={"task_queue": f"idle-{uuid.uuid4().hex[:6]}"})
    out = cli(idle, "job", "start", str(source), "--dataset", "idle", "--task", "sentiment")
    assert out.returncode == 0, out.stderr
    assert f"no worker is polling task queue '{idle.task_queue}'" in out.stdout.replace("\n", " ")


def temporal_cli(
    settings: Settings, *args: str, codec: bool = False
) -> subprocess.CompletedProcess[str]:
    """The `temporal` CLI on the stack; with `codec`, through our codec server (as the
    README shows: payloads it sends are encrypted, and it prints decoded results)."""
    extra = []
    if codec:
        token = read_secrets(settings.home_dir)["codec_token"]
        extra = ["--codec-endpoint", settings.codec_url, "--codec-auth", f"Bearer {token}"]
    return subprocess.run(
        [str(find_binary("temporal")), *args, "--address", settings.temporal_address, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def queue_items(settings: Settings, dataset: str) -> list[str]:
    out = cli(settings, "review", "list", "--dataset", dataset)
    assert out.returncode == 0, out.stdout + out.stderr
    return re.findall(r"│ ([0-9a-f]{12}) │", out.stdout)


def test_reviewer_paths_cli_signal_and_update(
    stack: Settings, cli_worker: None, gold_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "rv.jsonl", [r["text"] for r in gold_rows[300:340]])
    dataset = f"rv{uuid.uuid4().hex[:6]}"
    job = cli(
        stack, "job", "start", str(source), "--dataset", dataset, "--task", "sentiment", "--wait"
    )
    assert job.returncode == 0, job.stdout
    for _ in range(50):
        items = queue_items(stack, dataset)
        if len(items) >= 3:
            break
        time.sleep(0.2)
    assert len(items) >= 3, items
    first, second, third = items[:3]

    shown = cli(stack, "review", "show", first, "--dataset", dataset)
    assert shown.returncode == 0, shown.stdout
    assert (
        "agent votes" in shown.stdout and "tfidf_logreg" in shown.stdout and "rule" in shown.stdout
    )

    unsigned = cli(stack, "review", "submit", first, "--label", "positive", "--reviewer", "alice")
    assert unsigned.returncode == 1 and "carries no signed reviewer claim" in unsigned.stdout
    nobody = cli(stack, "review", "submit", first, "--label", "positive")
    assert nobody.returncode == 1 and "needs a signed reviewer claim" in nobody.stdout
    forged = claim("alice")[:-4] + "AAAA"
    refused = cli(stack, "review", "submit", first, "--label", "positive", "--token", forged)
    assert refused.returncode == 1 and "signature does not verify" in refused.stdout, refused.stdout
    as_bob = cli(
        stack, "review", "submit", first, "--label", "positive", "--reviewer", "bob",
        "--token", claim("alice"),
    )  # fmt: skip
    assert as_bob.returncode == 1 and "claim is for 'alice', not 'bob'" in as_bob.stdout
    mallory = claim("mallory")
    refused = cli(stack, "review", "submit", first, "--label", "positive", "--token", mallory)
    assert refused.returncode == 1
    assert "not on the roster for task 'sentiment'" in refused.stdout

    env_reviewer = settings_env(stack) | {
        "PYTHONPATH": str(PROJECT_ROOT),
        "COLUMNS": "200",
        "LABELFABRIC_REVIEW_TOKEN": claim("alice", task="sentiment"),
    }
    accepted = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "review",
            "submit",
            first,
            "--label",
            "positive",
            "--note",
            "from the CLI",
        ],
        env=env_reviewer,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "accepted" in accepted.stdout and "done" in accepted.stdout
    again = cli(stack, "review", "submit", first, "--label", "negative", "--token", claim("bob"))
    assert again.returncode == 1 and "already closed" in again.stdout

    # The raw Temporal CLI paths from the README: a signal and an update.
    wid = {
        i: f"review:{dataset}:{full}"
        for i in (second, third)
        for full in [next(x for x in _full_ids(stack, dataset) if x.startswith(i))]
    }
    # Without a claim the update is refused; the refused signal is recorded as refused.
    bare = json.dumps({"reviewer": "bob", "label": "negative"})
    args = ["workflow", "update", "execute", "--workflow-id", wid[third], "--name"]
    unsigned_update = temporal_cli(stack, *args, "submit_review", "--input", bare, codec=True)
    assert unsigned_update.returncode != 0
    assert "no signed reviewer claim" in unsigned_update.stderr + unsigned_update.stdout
    payload = json.dumps(
        {"reviewer": "bob", "label": "negative", "note": "raw signal", "token": claim("bob")}
    )
    signalled = temporal_cli(
        stack,
        "workflow",
        "signal",
        "--workflow-id",
        wid[second],
        "--name",
        "submit_review",
        "--input",
        payload,
        codec=True,
    )
    assert signalled.returncode == 0, signalled.stderr
    updated = temporal_cli(
        stack,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        wid[third],
        "--name",
        "submit_review",
        "--input",
        payload,
        codec=True,
    )
    assert updated.returncode == 0, updated.stderr
    assert "accepted:true" in updated.stdout and "state:done" in updated.stdout

    for _ in range(50):
        left = queue_items(stack, dataset)
        if not {first, second, third} & set(left):
            break
        time.sleep(0.2)
    assert not {first, second, third} & set(left)


def _full_ids(settings: Settings, dataset: str) -> list[str]:
    out = temporal_cli(
        settings,
        "workflow",
        "list",
        "--query",
        f'WorkflowType="ReviewItem" AND Dataset="{dataset}"',
        "-o",
        "json",
    )
    return [w["execution"]["workflowId"].rsplit(":", 1)[-1] for w in json.loads(out.stdout or "[]")]


def test_agent_train_stores_each_artifact_once_in_s3_by_version(stack: Settings) -> None:
    first = cli(stack, "agent", "train", "--task", "sentiment")
    assert first.returncode == 0, first.stdout + first.stderr
    found = re.search(r"models/sentiment/tfidf_logreg/([0-9a-f]{16})\.pkl", first.stdout)
    assert found, first.stdout
    key = found[0]
    s3 = make_s3_client(s3_target(stack))
    head = s3.head_object(Bucket=stack.s3_bucket, Key=key)
    artifact = (stack.models_dir / f"tfidf_logreg-{found[1]}.pkl").read_bytes()
    assert head["Metadata"]["content-sha256"] == hashlib.sha256(artifact).hexdigest()
    assert "keywords" in first.stdout and "(configuration only)" in first.stdout
    again = cli(stack, "agent", "train", "--task", "sentiment")
    assert again.returncode == 0
    versions = s3.list_object_versions(Bucket=stack.s3_bucket, Prefix=key)["Versions"]
    assert len(versions) == 1  # training again stored nothing new
