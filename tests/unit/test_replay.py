"""Replay every recorded history of a released workflow against the current code.

A change to workflow code that would make a running or completed job non-deterministic fails
here; such changes go behind `workflow.patched(...)`. Histories are recorded from real runs
(`temporal workflow show --workflow-id ID --output json > tests/histories/NAME.json`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker.main import WORKFLOWS

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def test_there_are_recorded_histories() -> None:
    every = {
        "label_dataset",
        "review_item",
        "dataset",
        "review_frontier",
        "retrain",
        "verify_labels",
    }
    assert {p.name.split("-")[0] for p in HISTORIES} >= every


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, await asyncio.to_thread(path.read_text))
    await Replayer(workflows=list(WORKFLOWS)).replay_workflow(history)
