"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from activities.payloads import (
    LabelDatasetResult,
    ReviewerGrant,
    ReviewItemInput,
    ReviewRulesPayload,
    ReviewStateView,
    ReviewSubmission,
)
from worker.settings import PROJECT_ROOT, Settings

# One in-process CLI command at a time: CliRunner swaps sys.stdout and os.environ.
_CLI_LOCK = threading.Lock()


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


@dataclass(frozen=True)
class CliResult:
    """What a `labelfabric` run gave: as `subprocess.CompletedProcess` names it."""

    returncode: int
    stdout: str
    stderr: str


def cli(settings: Settings, *args: str, timeout: float = 180, width: int = 200) -> CliResult:
    """`labelfabric ARGS` in this process (Typer's CliRunner) with the environment a
    subprocess would get, its output `width` columns wide (as piped with COLUMNS=width); on
    its own thread, so a test's running event loop is no obstacle to the command's
    `asyncio.run`. `run_cli` runs the real executable, for the e2e tests."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LABELFABRIC_")}
    env |= {k: v for k, v in settings_env(settings).items() if k.startswith("LABELFABRIC_")}
    env |= {"TEMPORAL_ADDRESS": None, "COLUMNS": str(width)}

    def invoke() -> CliResult:
        from typer.testing import CliRunner

        from worker.cli import app
        from worker.cli.console import console

        console.width = width  # what COLUMNS=width gives a subprocess

        result = CliRunner().invoke(app, list(args), env=env, prog_name="labelfabric")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return CliResult(result.exit_code, result.stdout, result.stderr)

    with _CLI_LOCK, ThreadPoolExecutor(1, thread_name_prefix="cli") as pool:
        return pool.submit(invoke).result(timeout=timeout)


def run_cli(
    settings: Settings, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`labelfabric ARGS` as a real subprocess that sees the same stack (the e2e tier)."""
    env = settings_env(settings) | {"PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )


class ThreadWorker:
    """A worker on a thread of its own with its own event loop, as `labelfabric worker` runs
    it, for the whole test session: nothing a test does on its loop can stall it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def __enter__(self) -> ThreadWorker:
        self._thread.start()
        if not self._ready.wait(timeout=180):
            raise TimeoutError("the test worker did not start within 180 s")
        if self._error is not None:
            raise RuntimeError("the test worker did not start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from worker.main import build_runtime, connect, make_worker

        try:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            client = await connect(self.settings)
            runtime = await build_runtime(self.settings, client)
        except BaseException as err:
            self._error = err
            self._ready.set()
            raise
        try:
            async with make_worker(client, self.settings, runtime):
                self._ready.set()
                await self._stop.wait()
        finally:
            await runtime.close()


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


# The session stack's reviewer-identity ring (set by the `stack` fixture): what `signed`
# mints claims with, as the review page or `labelfabric reviewer token` would.
IDENTITY_RING: list[Path] = []


def claim(reviewer: str, *, task: str = "*", ttl_s: int = 3600) -> str:
    from worker.identity import IdentityRing

    return IdentityRing.load(IDENTITY_RING[0]).mint(reviewer, task=task, ttl_s=ttl_s)


def signed(reviewer: str, label: str, note: str = "", **claim_args: Any) -> ReviewSubmission:
    """A submission carrying a valid signed claim for `reviewer`."""
    return ReviewSubmission(
        reviewer=reviewer, label=label, note=note, token=claim(reviewer, **claim_args)
    )


def public_keys() -> dict[str, str]:
    from worker.identity import IdentityRing

    return IdentityRing.load(IDENTITY_RING[0]).public_keys()


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
        **({"identity": public_keys()} | extra),
    )
    return await client.start_workflow(
        "ReviewItem",
        inp,
        id=f"review:{job.dataset}:{item_id}:{uuid.uuid4().hex[:6]}",
        task_queue=settings.task_queue,
        result_type=ReviewStateView,
    )
