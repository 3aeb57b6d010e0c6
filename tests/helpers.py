"""Small helpers shared by the integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from activities.payloads import (
    LabelDatasetResult,
    ReviewerGrant,
    ReviewItemInput,
    ReviewRulesPayload,
    ReviewStateView,
)
from worker.settings import PROJECT_ROOT, Settings


def write_jsonl(path: Path, texts: Sequence[str], extra_lines: Sequence[bytes] = ()) -> Path:
    with path.open("wb") as fh:
        for text in texts:
            fh.write(json.dumps({"text": text}).encode() + b"\n")
        for raw in extra_lines:
            fh.write(raw + b"\n")
    return path


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess (worker, CLI) needs to see the same stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELFABRIC_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"LABELFABRIC_{name.upper()}"] = str(value)
    env.pop("TEMPORAL_ADDRESS", None)
    return env


def cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`labelfabric ARGS` in a subprocess that sees the same stack."""
    env = settings_env(settings) | {"PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )


def spawn(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A long-running `labelfabric ARGS` (a worker, the review page), output to `log`."""
    env = settings_env(settings) | {"PYTHONPATH": str(PROJECT_ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", *args],
            env=env,
            stdout=out,
            stderr=out,
            cwd=PROJECT_ROOT,
        )


def spawn_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return spawn(settings, log, "worker")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process this test session started, by its pid: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def start_review(
    client: Client,
    settings: Settings,
    job: LabelDatasetResult,
    item_id: str,
    reviewers: Sequence[str],
    **extra: Any,
) -> WorkflowHandle[Any, ReviewStateView]:
    """A ReviewItem started directly, as `open_reviews` would, on an item of `job` (a fresh
    workflow id each call); `reviewers` are on the item's copy of the roster, all cleared."""
    inp = ReviewItemInput(
        dataset=job.dataset,
        item_id=item_id,
        job_id=job.job_id,
        task="sentiment",
        labels=["positive", "negative"],
        sensitivity="normal",
        policy=job.policy,
        rule_id="test",
        rules=ReviewRulesPayload(timeout_s=600),
        reviewers=[ReviewerGrant(id=r, cleared=True, groups=["primary"]) for r in reviewers],
        **extra,
    )
    return await client.start_workflow(
        "ReviewItem",
        inp,
        id=f"review:{job.dataset}:{item_id}:{uuid.uuid4().hex[:6]}",
        task_queue=settings.task_queue,
        result_type=ReviewStateView,
    )
