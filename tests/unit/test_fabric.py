"""The agent fabric's contract inside a chunk: the registry refuses agents that cannot serve a
task, a slow agent abstains instead of stalling the chunk, and the task's aggregator combines
the votes (Dawid–Skene fitted on the chunk and cited by version)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from agents.base import Vote
from agents.pipeline import combine, timed_predict
from agents.tasks import TaskError, load_task
from tests.unit.test_agents import GOOD_TASK, write_task


class Sleepy:
    name = "kw"
    version = "v1"

    def predict(self, texts: Sequence[str]) -> list[Vote]:
        time.sleep(1.0)
        return [Vote(label="positive", confidence=1.0, rationale="slow") for _ in texts]


async def test_an_agent_past_its_timeout_abstains_and_says_so(tmp_path: Path) -> None:
    write_task(tmp_path, GOOD_TASK.replace("kind: rules", "kind: rules\n    timeout_s: 0.2"))
    task = load_task(tmp_path, "demo")
    beats: list[float] = []
    started = time.perf_counter()
    votes = await timed_predict(Sleepy(), task, ["a", "b"], lambda: beats.append(1.0))
    assert time.perf_counter() - started < 0.9
    assert [(v.label, v.rationale) for v in votes] == [(None, "agent timed out after 0.2s")] * 2
    assert beats  # the activity heartbeats while it waits on an agent


async def test_an_agent_within_its_timeout_keeps_the_heartbeat_going(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agents.pipeline as pipeline

    monkeypatch.setattr(pipeline, "BEAT_S", 0.1)
    write_task(tmp_path, GOOD_TASK.replace("kind: rules", "kind: rules\n    timeout_s: 5"))
    beats: list[float] = []
    votes = await timed_predict(
        Sleepy(), load_task(tmp_path, "demo"), ["a"], lambda: beats.append(time.perf_counter())
    )
    assert [v.label for v in votes] == ["positive"]
    assert len(beats) >= 5  # ~1 s of work, a beat every 0.1 s


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("kind: rules", "kind: rules\n    timeout_s: 0"), "'timeout_s' must be a positive"),
        (("kind: rules", "kind: [rules]"), "field 'kind' must be one of rules, sklearn"),
        (("labels:", "modality: image\nlabels:"), "kind 'rules' reads text, not this task's"),
        (("labels:", "aggregator: median\nlabels:"), "'aggregator' must be one of dawid_skene"),
    ],
)
def test_registry_refuses_what_an_agent_cannot_serve(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    write_task(tmp_path, GOOD_TASK.replace(*change, 1))
    with pytest.raises(TaskError, match=expected):
        load_task(tmp_path, "demo")


def test_llm_agent_without_an_endpoint_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.tasks import build_agents

    monkeypatch.delenv("LABELFABRIC_LLM_BASE_URL", raising=False)
    llm = "\n  - name: gpt\n    kind: llm\n    model: small\n"
    write_task(tmp_path, GOOD_TASK + llm)
    task = load_task(tmp_path, "demo")
    with pytest.raises(TaskError, match="set LABELFABRIC_LLM_BASE_URL"):
        build_agents(task, ["gpt"], models_dir=tmp_path)
    monkeypatch.setenv("LABELFABRIC_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    (agent,) = build_agents(task, ["gpt"], models_dir=tmp_path)
    assert agent.name == "gpt" and len(agent.version) == 16


def vote(label: str | None, confidence: float = 0.9) -> Vote:
    if label is None:
        return Vote(label=None, confidence=0.0, rationale="abstain")
    return Vote(label=label, confidence=confidence, rationale="")


def test_combine_uses_the_tasks_aggregator(tmp_path: Path) -> None:
    write_task(tmp_path, GOOD_TASK)
    task = load_task(tmp_path, "demo")
    assert task.aggregator == "dawid_skene"
    # Three agents on six items: a and b mostly agree, c contradicts them.
    a = [vote(x) for x in ["positive", "positive", "negative", "negative", "positive", None]]
    b = [vote(x) for x in ["positive", "positive", "negative", "positive", "positive", None]]
    c = [vote(x, 0.6) for x in ["negative", "positive", "positive", "negative", None, None]]
    keys = ["a@1", "b@1", "c@1"]

    ds = combine(task, keys, [a, b, c])
    assert ds.model is not None and ds.method == f"dawid_skene@{ds.model.version}"
    assert [e.label for e in ds.ensembles[:5]] == ["positive"] * 2 + ["negative"] + ["positive"] * 2
    assert ds.ensembles[5].label is None and ds.ensembles[5].confidence == 0.0
    assert -1.0 <= ds.alpha <= 1.0 and combine(task, keys, [a, b, c]).method == ds.method

    mv = combine(replace(task, aggregator="majority_vote"), keys, [a, b, c])
    assert mv.method == "majority_vote" and mv.model is None
    assert mv.ensembles[3].label == "negative"  # 2 of 3 say negative on item 4
    wv = combine(replace(task, aggregator="weighted_vote"), keys, [a, b, c])
    assert wv.method == "weighted_vote" and wv.ensembles[0].confidence == pytest.approx(1.8 / 2.4)

    nobody = combine(task, keys, [[vote(None)], [vote(None)], [vote(None)]])
    assert nobody.model is None and nobody.ensembles[0].label is None
    assert math.isnan(nobody.alpha) and nobody.alpha_or(None) is None


async def test_a_bad_task_file_does_not_keep_the_worker_from_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from activities.labeling import LabelingActivities
    from agents.store import TaskStore
    from policy_rules.store import PolicyStore

    write_task(tmp_path, GOOD_TASK)
    write_task(tmp_path, GOOD_TASK.replace("name: demo", "name: broken\nmodality: image"), "broken")
    acts = LabelingActivities(
        engine=None,  # type: ignore[arg-type]  # warm() touches no database
        tasks=TaskStore(tmp_path),
        policies=PolicyStore(tmp_path),
        models_dir=tmp_path / "models",
    )
    await acts.warm()
    assert ("demo", "kw") in acts._agents
    assert "task broken: agents not built at start" in caplog.text
    assert "kind 'rules' reads text, not this task's modality 'image'" in caplog.text
