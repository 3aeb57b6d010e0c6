"""Agents, aggregation and task loading: plain Python, no stack needed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.aggregate import Ensemble, majority_vote
from agents.base import Agent, Vote
from agents.rules import RulesAgent
from agents.samples import SampleFiles, write_sample
from agents.sklearn_model import SklearnAgent
from agents.tasks import TaskError, build_agents, list_tasks, load_task

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tasks"
LABELS = ("positive", "negative")
RULES = [
    {"label": "positive", "patterns": [r"\bgreat\b", r"\bmasterpiece\b"]},
    {"label": "negative", "patterns": [r"\bdull\b", r"\bmess\b"]},
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return write_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def model(models_dir: Path) -> SklearnAgent:
    return SklearnAgent.from_seed(
        "tfidf_logreg", TASKS / "sentiment_seed.jsonl", LABELS, models_dir
    )


def read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- rules agent -----------------------------------------------------------------------------


def test_rules_agent_votes_for_the_label_with_most_matching_patterns() -> None:
    agent = RulesAgent("kw", LABELS, RULES)
    one, two, against = agent.predict(
        ["A GREAT film.", "A great masterpiece.", "Great cast, but a dull mess."]
    )
    assert (one.label, one.confidence) == ("positive", 0.75)
    assert (two.label, two.confidence) == ("positive", 0.875)
    assert "/\\bgreat\\b/" in two.rationale and "/\\bmasterpiece\\b/" in two.rationale
    # 2 negative patterns vs 1 positive: margin 1.
    assert (against.label, against.confidence) == ("negative", 0.75)
    assert "\\bdull\\b" in against.rationale and "\\bgreat\\b" in against.rationale


def test_rules_agent_abstains_on_no_match_and_on_ties() -> None:
    agent = RulesAgent("kw", LABELS, RULES)
    nothing, tie = agent.predict(["An ordinary afternoon.", "Great actors, dull script."])
    assert nothing == Vote(label=None, confidence=0.0, rationale="rules: no pattern matched")
    assert tie.label is None and tie.confidence == 0.0
    assert tie.rationale.startswith("rules: tie")


def test_rules_agent_version_is_a_content_hash() -> None:
    a = RulesAgent("kw", LABELS, RULES)
    b = RulesAgent("other_name", LABELS, [dict(r) for r in RULES])
    changed = RulesAgent("kw", LABELS, [*RULES, {"label": "negative", "patterns": ["meh"]}])
    assert re.fullmatch(r"[0-9a-f]{16}", a.version)
    assert a.version == b.version
    assert changed.version != a.version


def test_rules_agent_refuses_a_bad_regex_naming_file_agent_and_pattern() -> None:
    bad = [{"label": "positive", "patterns": ["fine", "(unclosed"]}]
    with pytest.raises(TaskError) as exc:
        RulesAgent("keywords", LABELS, bad, source="tasks/x.yaml")
    message = str(exc.value)
    assert "tasks/x.yaml" in message and "'keywords'" in message and "(unclosed" in message


def test_a_catastrophic_pattern_abstains_on_its_item_instead_of_spinning() -> None:
    import threading
    import time

    evil = [
        {"label": "negative", "patterns": ["(a|aa)+$"]},  # exponential backtracking
        {"label": "positive", "patterns": ["\\bgreat\\b"]},
    ]
    agent = RulesAgent("kw", LABELS, evil)
    ticks = 0
    done = threading.Event()

    def ticker() -> None:  # another Python thread keeps running: the GIL is not held
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.01)

    t = threading.Thread(target=ticker)
    t.start()
    started = time.monotonic()
    slow, fine = agent.predict(["a" * 60 + "!", "a great film"])
    elapsed = time.monotonic() - started
    done.set()
    t.join()
    assert (
        slow.label is None and "ran out of time" in slow.rationale and "(a|aa)+$" in slow.rationale
    )
    assert fine.label == "positive"
    assert elapsed < 5
    assert ticks >= 0.3 * elapsed / 0.01  # the other thread ran while the pattern matched


async def test_a_cpu_bound_agent_past_its_time_stops_at_the_next_slice() -> None:
    import time

    from agents.pipeline import PREDICT_SLICE, timed_predict

    calls = 0

    class Slow:
        name, kind, version = "slow", "test", "1"

        def predict(self, texts: list[str]) -> list[Vote]:
            nonlocal calls
            calls += 1
            end = time.monotonic() + 0.2
            while time.monotonic() < end:  # CPU-bound, never yields
                pass
            return [Vote(label="positive", confidence=0.9, rationale="slow") for _ in texts]

    task = load_task(Path("tasks"), "sentiment")
    spec = task.agents[0]
    import dataclasses

    task = dataclasses.replace(
        task, agents=(dataclasses.replace(spec, name="slow", timeout_s=0.3),)
    )
    votes = await timed_predict(Slow(), task, ["x"] * (PREDICT_SLICE * 20))  # type: ignore[arg-type]
    assert all(v.label is None and "timed out" in v.rationale for v in votes)
    await asyncio.sleep(0.5)
    assert calls <= 4  # stopped after the slice in flight, not all 20


def test_rules_agent_refuses_a_label_outside_the_task() -> None:
    with pytest.raises(TaskError, match="'neutral' is not one of the task's labels"):
        RulesAgent("kw", LABELS, [{"label": "neutral", "patterns": ["meh"]}])


def test_votes_are_validated() -> None:
    with pytest.raises(ValueError):
        Vote(label="positive", confidence=1.5, rationale="")
    with pytest.raises(ValueError):
        Vote(label=None, confidence=0.5, rationale="")


# --- sklearn agent ---------------------------------------------------------------------------

_VERSION_SCRIPT = """
import sys
from pathlib import Path
from agents.sklearn_model import SklearnAgent
agent = SklearnAgent.from_seed(
    "tfidf_logreg", Path(sys.argv[1]), ["positive", "negative"], Path(sys.argv[2])
)
sys.stdout.write(agent.version)
"""


def test_sklearn_version_is_identical_across_processes(tmp_path: Path, model: SklearnAgent) -> None:
    procs = [  # two interpreters with different hash seeds, side by side
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _VERSION_SCRIPT,
                str(TASKS / "sentiment_seed.jsonl"),
                str(tmp_path / f"models-{hash_seed}"),
            ],
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hash_seed in ("1", "4242")
    ]
    versions = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        versions.append(out.strip())
    assert versions[0] == versions[1] == model.version
    # And the artifacts themselves are byte-identical.
    blobs = {
        (tmp_path / f"models-{s}" / f"tfidf_logreg-{model.version}.pkl").read_bytes()
        for s in ("1", "4242")
    }
    assert len(blobs) == 1


def test_sklearn_artifact_is_written_once_and_named_by_its_hash(
    model: SklearnAgent, models_dir: Path
) -> None:
    artifact = models_dir / f"tfidf_logreg-{model.version}.pkl"
    assert model.artifact_path == artifact and artifact.is_file()
    blob = artifact.read_bytes()
    assert hashlib.sha256(blob).hexdigest()[:16] == model.version
    mtime = artifact.stat().st_mtime_ns
    again = SklearnAgent.from_seed(
        "tfidf_logreg", TASKS / "sentiment_seed.jsonl", LABELS, models_dir
    )
    assert again.version == model.version
    assert artifact.stat().st_mtime_ns == mtime  # existing artifact left alone
    loaded = SklearnAgent.from_artifact("tfidf_logreg", artifact, LABELS)
    texts = ["A dull, boring mess.", "A warm, funny and moving film."]
    assert loaded.version == model.version
    assert loaded.predict(texts) == model.predict(texts)


def test_sklearn_predictions_are_labels_with_probabilities_and_reasons(
    model: SklearnAgent,
) -> None:
    texts = ["A dull, boring, tedious mess.", "A funny, moving and beautifully acted film.", ""]
    votes = model.predict(texts)
    assert len(votes) == 3
    assert all(v.label in LABELS and 0.5 <= v.confidence <= 1.0 for v in votes)
    assert votes[0].label == "negative" and votes[1].label == "positive"
    assert re.fullmatch(r"model: '[^']+'(, '[^']+'){0,2}", votes[0].rationale)
    assert "'dull'" in votes[0].rationale or "'boring'" in votes[0].rationale
    assert votes[2].rationale == "model: no known term favours it (class prior)"
    assert model.predict(texts) == votes  # deterministic
    assert model.predict([]) == []


def test_sklearn_accuracy_on_the_gold_sample(model: SklearnAgent, sample: SampleFiles) -> None:
    gold = read_jsonl(sample.gold)
    votes = model.predict([r["text"] for r in gold])
    accuracy = sum(v.label == r["label"] for v, r in zip(votes, gold, strict=True)) / len(gold)
    # Measured 0.711 on the 2463 held-out rows; short snippets with a 2400-row seed.
    assert accuracy >= 0.7


def test_sklearn_seed_label_outside_the_task_names_file_and_line(tmp_path: Path) -> None:
    seed = tmp_path / "seed.jsonl"
    rows = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"}]
    rows.append({"text": "meh", "label": "neutral"})
    seed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TaskError, match=rf"{re.escape(str(seed))}:3: label 'neutral'"):
        SklearnAgent.from_seed("m", seed, LABELS, tmp_path / "models")


def test_sklearn_seed_with_bad_json_names_file_and_line(tmp_path: Path) -> None:
    seed = tmp_path / "seed.jsonl"
    seed.write_text('{"text": "good", "label": "positive"}\n{"text": \n')
    with pytest.raises(TaskError, match=rf"{re.escape(str(seed))}:2: not valid JSON"):
        SklearnAgent.from_seed("m", seed, LABELS, tmp_path / "models")


# --- majority vote ---------------------------------------------------------------------------


def vote(label: str | None, confidence: float = 0.0) -> Vote:
    return Vote(label=label, confidence=confidence, rationale="test")


def test_majority_vote_all_abstain_and_no_votes() -> None:
    assert majority_vote([vote(None), vote(None)]) == Ensemble(
        label=None, confidence=0.0, agreement=0.0, votes=2, abstained=2
    )
    assert majority_vote([]) == Ensemble(
        label=None, confidence=0.0, agreement=0.0, votes=0, abstained=0
    )


def test_majority_vote_single_voter_and_abstentions() -> None:
    result = majority_vote([vote(None), vote("positive", 0.8)])
    assert result == Ensemble(label="positive", confidence=0.8, agreement=1.0, votes=2, abstained=1)
    assert result.method == "majority_vote"


def test_majority_vote_majority_with_dissent() -> None:
    result = majority_vote([vote("negative", 0.9), vote("positive", 0.6), vote("negative", 0.7)])
    assert result.label == "negative"
    assert result.agreement == pytest.approx(2 / 3)
    assert result.confidence == pytest.approx(0.8 * 2 / 3)
    assert (result.votes, result.abstained) == (3, 0)


def test_majority_vote_tie_breaks_on_confidence_then_label_name() -> None:
    by_confidence = [vote("positive", 0.6), vote("negative", 0.9)]
    assert majority_vote(by_confidence).label == "negative"
    assert majority_vote(by_confidence[::-1]).label == "negative"
    by_name = [vote("positive", 0.7), vote("negative", 0.7)]
    assert majority_vote(by_name).label == "negative"
    assert majority_vote(by_name[::-1]) == majority_vote(by_name)
    assert majority_vote(by_name).agreement == 0.5


# --- tasks -----------------------------------------------------------------------------------


def test_sentiment_task_loads() -> None:
    task = load_task(TASKS, "sentiment")
    assert task.labels == LABELS
    assert task.text_field == "text" and task.max_chars == 20000
    assert [(a.name, a.kind) for a in task.agents] == [
        ("keywords", "rules"),
        ("tfidf_logreg", "sklearn"),
    ]
    assert task.description
    assert [t.name for t in list_tasks(TASKS)] == ["digits", "sentiment"]


def test_build_agents_in_file_order_or_by_name(models_dir: Path) -> None:
    task = load_task(TASKS, "sentiment")
    agents = build_agents(task, None, models_dir=models_dir)
    assert [a.name for a in agents] == ["keywords", "tfidf_logreg"]
    assert all(isinstance(a, Agent) for a in agents)
    only = build_agents(task, ["keywords"], models_dir=models_dir)
    assert [type(a) for a in only] == [RulesAgent]
    votes = agents[0].predict(["A masterpiece."])
    assert votes[0].label == "positive"


def test_unknown_task_lists_known_tasks() -> None:
    with pytest.raises(TaskError) as exc:
        load_task(TASKS, "nope")
    assert (
        str(exc.value) == "unknown task 'nope': no tasks/nope.yaml; known tasks: digits, sentiment"
    )
    with pytest.raises(TaskError, match="unknown task"):
        load_task(TASKS, "../tasks/sentiment")


def test_unknown_agent_names_it_and_the_tasks_agents(models_dir: Path) -> None:
    task = load_task(TASKS, "sentiment")
    with pytest.raises(TaskError) as exc:
        build_agents(task, ["keywords", "gpt"], models_dir=models_dir)
    message = str(exc.value)
    assert "no agent 'gpt'" in message and "keywords, tfidf_logreg" in message


def write_task(tasks_dir: Path, text: str, name: str = "demo") -> Path:
    tasks_dir.mkdir(parents=True, exist_ok=True)
    path = tasks_dir / f"{name}.yaml"
    path.write_text(text)
    return path


GOOD_TASK = """\
name: demo
description: test
labels: [positive, negative]
agents:
  - name: kw
    kind: rules
    rules:
      - {label: positive, patterns: ["good"]}
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("labels:", "lables:"), "unknown field(s) 'lables'"),
        (("description: test", "description: test\nmax_chars: lots"), "'max_chars'"),
        (("description: test", "description: test\ngold_fraction: 1.5"), "'gold_fraction'"),
        (("kind: rules", "kind: rulez"), "agent 'kw': field 'kind'"),
        (("    rules:", "    patterns: []\n    rules:"), "agent 'kw': unknown field(s) 'patterns'"),
        (('["good"]', '["(bad"]'), "agent 'kw': pattern '(bad' does not compile"),
        (("name: demo", "name: other"), "field 'name' is 'other'"),
        (("labels: [positive, negative]", "labels: [positive]"), "field 'labels'"),
    ],
)
def test_bad_task_fields_name_file_and_field(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    assert change[0] in GOOD_TASK
    path = write_task(tmp_path, GOOD_TASK.replace(change[0], change[1], 1))
    with pytest.raises(TaskError) as exc:
        load_task(tmp_path, "demo")
    assert str(path) in str(exc.value)
    assert expected in str(exc.value)


def test_good_task_defaults(tmp_path: Path) -> None:
    write_task(tmp_path, GOOD_TASK)
    task = load_task(tmp_path, "demo")
    assert task.text_field == "text" and task.max_chars == 20000


def test_seed_paths_are_relative_to_the_task_file(tmp_path: Path, models_dir: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copy(TASKS / "sentiment.yaml", folder / "sentiment.yaml")
    shutil.copy(TASKS / "sentiment_seed.jsonl", folder / "sentiment_seed.jsonl")
    task = load_task(folder, "sentiment")
    (model,) = build_agents(task, ["tfidf_logreg"], models_dir=models_dir)
    assert model.name == "tfidf_logreg"
    (folder / "sentiment_seed.jsonl").unlink()
    with pytest.raises(TaskError, match="agent 'tfidf_logreg': seed file .* does not exist"):
        load_task(folder, "sentiment")
