"""The simulated reviewer (`labelfabric review bot`) on the real stack: it answers open reviews
from a gold file through the same update a person uses, marked `sim:` in every record, and
only where the worker has simulated reviewers on duty."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.helpers import ThreadWorker, cli
from tests.integration.reviewing import eventually, label_texts, rows
from worker.main import Runtime
from worker.settings import Settings


@pytest.fixture(scope="module")
def on_duty(stack: Settings) -> Iterator[Settings]:
    """A worker with the roster's simulated reviewers on duty, on its own task queue."""
    local = stack.model_copy(
        update={"simulated_reviewers": True, "task_queue": f"bot-{uuid.uuid4().hex[:6]}"}
    )
    with ThreadWorker(local):
        yield local


async def test_the_bot_answers_from_gold_and_marks_every_record(
    env: WorkflowEnvironment,
    on_duty: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    chosen = gold_rows[2300:2360]
    dataset, result = await label_texts(
        env, on_duty, [r["text"] for r in chosen], tmp_path, prefix="bot"
    )
    routed = result.counts.human_review
    assert routed > 5
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    out = cli(
        on_duty, "review", "bot", "--gold", str(gold), "--task", "sentiment",
        "--dataset", dataset, "--rate", "200", "--accuracy", "0.8", "--idle", "2",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    said = " ".join(out.stdout.split())
    assert f"sim:gold: {routed} review(s) answered" in said and "0 refused" in said

    async def all_closed() -> bool:
        left = await rows(
            runtime,
            "SELECT count(*) FROM review_task WHERE dataset = :d AND closed_at IS NULL",
            d=dataset,
        )
        return left == [(0,)]

    assert await eventually(all_closed, within=30)
    reviewed = await rows(
        runtime, "SELECT reviewer, note, accepted FROM review WHERE dataset = :d", d=dataset
    )
    assert len(reviewed) == routed
    assert all(r == "sim:gold" and "simulated" in str(n) and a for r, n, a in reviewed)
    humans = await rows(
        runtime,
        "SELECT reviewers FROM label WHERE dataset = :d AND source = 'human' AND is_current",
        d=dataset,
    )
    assert len(humans) == routed and all(h[0] == ["sim:gold"] for h in humans)
    audit = await rows(
        runtime,
        "SELECT DISTINCT actor FROM audit_event WHERE kind = 'review_accepted' AND subject LIKE :s",
        s=f"review:{dataset}:%",
    )
    assert audit == [("sim:gold",)]


async def test_the_bot_is_off_duty_unless_the_worker_allows_it(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    gold_rows: list[dict[str, str]],
    tmp_path: Path,
) -> None:
    chosen = gold_rows[2360:2400]
    texts = [r["text"] for r in chosen]
    dataset, _ = await label_texts(env, stack, texts, tmp_path, prefix="bot")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    out = cli(
        stack, "review", "bot", "--gold", str(gold), "--task", "sentiment",
        "--dataset", dataset, "--idle", "1",
    )  # fmt: skip
    said = " ".join(out.stdout.split())
    assert out.returncode == 1 and "LABELFABRIC_SIMULATED_REVIEWERS=1" in said
    refused = cli(stack, "review", "bot", "--gold", str(gold), "--task", "sentiment",
                  "--dataset", dataset, "--reviewer", "alice")  # fmt: skip
    assert refused.returncode == 1 and "starts with 'sim:'" in refused.stdout
