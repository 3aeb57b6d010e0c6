"""Fixtures of the integration tier (the session's stack, worker and clients are in
tests/conftest.py)."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.payloads import LabelDatasetInput, LabelDatasetResult
from tests.helpers import ThreadWorker, write_jsonl
from tests.integration.reviewing import rows
from worker.main import Runtime
from worker.settings import Settings


@pytest.fixture(scope="module")
async def routed(
    env: WorkflowEnvironment,
    worker: ThreadWorker,
    stack: Settings,
    runtime: Runtime,
    gold_rows: list[dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, list[str], dict[str, str], LabelDatasetResult]:
    """A real job whose human_review items each got a ReviewItem workflow."""
    dataset = f"rev{uuid.uuid4().hex[:6]}"
    chosen = gold_rows[:60]
    source = write_jsonl(tmp_path_factory.mktemp("rev") / "r.jsonl", [r["text"] for r in chosen])
    result = await env.client.execute_workflow(
        "LabelDataset",
        LabelDatasetInput(dataset=dataset, source=str(source), task="sentiment"),
        id=f"label:{dataset}:j1",
        task_queue=stack.task_queue,
        result_type=LabelDatasetResult,
    )
    gold = {hashlib.sha256(r["text"].encode()).hexdigest(): r["label"] for r in chosen}
    items = [
        str(r[0])
        for r in await rows(
            runtime,
            "SELECT item_id FROM review_task WHERE dataset = :d ORDER BY item_id",
            d=dataset,
        )
    ]
    assert len(items) == result.counts.human_review > 4
    return dataset, items, gold, result
