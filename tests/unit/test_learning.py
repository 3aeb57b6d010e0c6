"""Retraining agents on reviewers' labels (agents.learning): the training seed, the version it
makes, the k-fold comparison a gate judges; and the Retrain workflow's counting on the
time-skipping server with a fake round."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.datasets import load_digits
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import ids
from activities.payloads import RetrainInput, RetrainRequest, RetrainResult, RetrainStatus
from agents.learning import Example, compare, fold_of, train, trainable, training_seed
from agents.sklearn_model import _CACHE
from agents.tasks import build_agents, load_task
from worker.main import WORKFLOWS
from worker.settings import PROJECT_ROOT

TASKS = PROJECT_ROOT / "tasks"


def test_human_labels_win_over_the_seed_and_order_does_not_matter() -> None:
    task = load_task(TASKS, "sentiment")
    spec = trainable(task)[0]
    first = json.loads((TASKS / "sentiment_seed.jsonl").read_text().split("\n")[0])
    flipped = "negative" if first["label"] == "positive" else "positive"
    human = [Example("a", first["text"], flipped), Example("b", "a brand new snippet", "positive")]
    data = training_seed(task, spec, human)
    lines = [x for x in data.decode().split("\n") if x]
    records = {json.loads(x)["text"]: json.loads(x)["label"] for x in lines}
    assert records[first["text"]] == flipped and records["a brand new snippet"] == "positive"
    assert training_seed(task, spec, list(reversed(human))) == data


def test_digits_learn_from_people_and_the_same_labels_give_the_same_version(
    tmp_path: Path,
) -> None:
    task = load_task(TASKS, "digits")
    spec = trainable(task)[0]
    data = load_digits()
    human = [
        Example(f"d{i}", " ".join(f"{v:g}" for v in row), str(t))
        for i, (row, t) in enumerate(zip(data.data[:400], data.target[:400], strict=True))
    ]
    models = tmp_path / "models"
    incumbent = build_agents(task, [spec.name], models_dir=models)[0]
    before = len(_CACHE)
    a = train(task, spec, human, scratch=tmp_path / "s", models_dir=models)
    b = train(task, spec, list(reversed(human)), scratch=tmp_path / "s", models_dir=models)
    assert a.version == b.version != incumbent.version
    assert (models / f"{spec.name}-{a.version}.pkl").exists()
    assert len(_CACHE) == before  # one-off training seeds leave no fitted model behind
    cmp = compare(task, spec, human, incumbent, scratch=tmp_path / "s", models_dir=models)
    assert cmp.items == 400 and 0 <= cmp.incumbent_accuracy <= 1
    assert cmp.candidate_accuracy >= cmp.incumbent_accuracy and cmp.candidate_accuracy > 0.7
    assert not (tmp_path / "s" / "folds").exists()  # fold models are thrown away
    assert {fold_of(ex.item_id, 5) for ex in human} == set(range(5))


@dataclass
class FakeRound:
    requests: list[RetrainRequest] = field(default_factory=list)

    @activity.defn(name="retrain_agents")
    async def retrain_agents(self, inp: RetrainRequest) -> RetrainResult:
        self.requests.append(inp)
        return RetrainResult(task=inp.task, examples=len(self.requests))


async def test_the_retrain_workflow_runs_a_round_every_n_labels_and_when_asked(
    skipping: WorkflowEnvironment,
) -> None:
    fake = FakeRound()
    queue = f"unit-{uuid.uuid4().hex[:8]}"
    async with Worker(
        skipping.client,
        task_queue=queue,
        workflows=list(WORKFLOWS),
        activities=[fake.retrain_agents],
    ):
        handle = await skipping.client.start_workflow(
            ids.RETRAIN_WORKFLOW,
            RetrainInput(task="t", every=3),
            id=ids.retrain_workflow_id(f"t{uuid.uuid4().hex[:6]}"),
            task_queue=queue,
            start_signal="labels_added",
        )
        await handle.signal("labels_added")

        async def rounds(n: int) -> RetrainStatus:
            for _ in range(200):
                status = await handle.query("status", result_type=RetrainStatus)
                if status.rounds >= n:
                    return status
                await asyncio.sleep(0.05)
            raise AssertionError(f"not {n} rounds: {status}")

        await asyncio.sleep(0.3)
        status = await handle.query("status", result_type=RetrainStatus)
        assert (status.rounds, status.pending, fake.requests) == (0, 2, [])  # 2 of 3
        await handle.signal("labels_added")
        status = await rounds(1)
        assert [r.reason for r in fake.requests] == ["3 new human labels"]
        assert status.pending == 0 and status.last is not None and not status.running
        await handle.signal("retrain")
        status = await rounds(2)
        assert fake.requests[-1].reason == "asked" and status.pending == 0
        await asyncio.sleep(0.3)
        assert len(fake.requests) == 2
