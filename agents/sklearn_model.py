"""A TF-IDF + logistic-regression agent trained from a task's seed labels.

Role: the statistical counterpart of the keyword rules. `SklearnAgent.from_seed` trains the
pipeline from a labeled JSONL file (fields `text` and `label`), pickles it, and names the
result by the hash of the pickled bytes. A worker process builds it once and keeps it.

Invariants:
- Training is deterministic (fixed `random_state`, deterministic solver, seed file order), and
  the pickled bytes are identical across processes: attributes whose value depends on the
  process (sets, whose order follows PYTHONHASHSEED; `id()` caches, which follow ASLR) are
  deleted after fit, and `_scrub` refuses any set left anywhere in the fitted objects.
- `version` = first 16 hex of sha256 of the pickled bytes, and the artifact is written once to
  `models_dir/<name>-<version>.pkl` (atomically; an existing file is left alone).
- A seed label outside the task's label set is a `TaskError` naming the file and line.
- `predict` never abstains: label = argmax of `predict_proba`, confidence = that probability,
  rationale = the (up to) three terms of the text that push hardest toward that label.
- Artifacts are pickles: load only files this module wrote (`from_artifact`), never
  untrusted ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from agents.base import TaskError, Vote, clip_rationale, content_version

T = TypeVar("T")
# Protocol 5 is the highest supported by Python 3.11; pinning it keeps the bytes (and so the
# version) independent of the interpreter's default protocol.
PICKLE_PROTOCOL = 5
RANDOM_STATE = 0
RATIONALE_TERMS = 3

# Attributes scikit-learn sets during fit whose values are process-dependent: `stop_words_`
# is a set (iteration order follows PYTHONHASHSEED; removed in recent releases but deleted
# if present), `_stop_words_id` is an `id()` cache (differs with ASLR). Both are only caches.
_PROCESS_DEPENDENT_ATTRS = ("stop_words_", "_stop_words_id")

# One trained model per (name, labels, seed content) per process: training takes ~1 s, and
# activities may ask for the agents many times.
# Keyed by (kind, name, labels, seed sha256, ...): shared by every model kind's agents.
_CACHE: dict[tuple[Any, ...], tuple[Any, bytes]] = {}
_CACHE_LOCK = threading.Lock()


def make_pipeline() -> Pipeline:
    return Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
            ("clf", LogisticRegression(random_state=RANDOM_STATE, max_iter=1000)),
        ]
    )


class SklearnAgent:
    kind = "sklearn"

    def __init__(
        self,
        name: str,
        pipeline: Pipeline,
        *,
        version: str,
        labels: Sequence[str],
        artifact_path: Path | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.labels: tuple[str, ...] = tuple(labels)
        self.artifact_path = artifact_path
        self._vectorizer: TfidfVectorizer = pipeline.named_steps["tfidf"]
        self._clf: LogisticRegression = pipeline.named_steps["clf"]
        self._classes: list[str] = [str(c) for c in self._clf.classes_]
        unknown = sorted(set(self._classes) - set(self.labels))
        if unknown:
            raise TaskError(
                f"agent '{name}': model predicts label(s) {unknown} outside the task's labels "
                f"({', '.join(self.labels)})"
            )
        self._terms: np.ndarray = self._vectorizer.get_feature_names_out()
        coef = np.asarray(self._clf.coef_, dtype=np.float64)
        # Per-class weight vectors: a term's push toward class k is tfidf * weight[k]. A binary
        # model stores one vector, for classes_[1]; classes_[0] gets its negation.
        if len(self._classes) == 2:
            self._weights = np.vstack([-coef[0], coef[0]])
        else:
            self._weights = coef

    @classmethod
    def from_seed(
        cls, name: str, seed_path: Path, labels: Sequence[str], models_dir: Path
    ) -> SklearnAgent:
        labels = tuple(labels)
        seed_bytes = _read_bytes(seed_path, name)
        key = ("sklearn", name, labels, hashlib.sha256(seed_bytes).hexdigest())

        def fit() -> Pipeline:
            texts, targets = parse_seed(seed_bytes, seed_path, labels)
            pipeline = make_pipeline()
            pipeline.fit(texts, targets)
            _scrub(pipeline)
            return pipeline

        pipeline, version, artifact = trained_artifact(key, fit, models_dir, name)
        return cls(name, pipeline, version=version, labels=labels, artifact_path=artifact)

    @classmethod
    def from_artifact(cls, name: str, path: Path, labels: Sequence[str]) -> SklearnAgent:
        """Load a pickle written by `from_seed`; the version is re-derived from its bytes."""
        pipeline, version = read_artifact(path, Pipeline, "scikit-learn pipeline")
        return cls(name, pipeline, version=version, labels=labels, artifact_path=path)

    def predict(self, texts: Sequence[str]) -> list[Vote]:
        if not texts:
            return []
        x = self._vectorizer.transform(list(texts)).tocsr()
        proba = self._clf.predict_proba(x)
        votes: list[Vote] = []
        for row in range(x.shape[0]):
            k = int(np.argmax(proba[row]))  # first maximum: deterministic on exact ties
            confidence = min(1.0, max(0.0, float(proba[row, k])))
            votes.append(
                Vote(
                    label=self._classes[k],
                    confidence=confidence,
                    rationale=clip_rationale(self._rationale(x, row, k)),
                )
            )
        return votes

    def _rationale(self, x: Any, row: int, k: int) -> str:
        start, end = x.indptr[row], x.indptr[row + 1]
        idx = x.indices[start:end]
        push = x.data[start:end] * self._weights[k, idx]
        # Strongest push first; ties broken by term so the text is stable.
        ranked = sorted(
            ((float(p), str(self._terms[i])) for p, i in zip(push, idx, strict=True) if p > 0),
            key=lambda pt: (-pt[0], pt[1]),
        )[:RATIONALE_TERMS]
        if not ranked:
            return "model: no known term favours it (class prior)"
        return "model: " + ", ".join(f"'{term}'" for _, term in ranked)


def seed_records(data: bytes, path: Path, labels: Sequence[str]) -> Iterator[tuple[int, str, str]]:
    """(line number, text, label) of each seed record; anything malformed is a TaskError
    naming the file and line."""
    # split("\n"), not splitlines(): the latter also splits on U+2028 etc. inside strings.
    for lineno, line in enumerate(data.decode("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise TaskError(f"{path}:{lineno}: expected an object with 'text' and 'label'")
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str):
            raise TaskError(f"{path}:{lineno}: field 'text' must be a string")
        if label not in labels:
            raise TaskError(
                f"{path}:{lineno}: label {label!r} is not one of the task's labels "
                f"({', '.join(labels)})"
            )
        yield lineno, text, str(label)


def trained_artifact(
    key: tuple[Any, ...], fit: Callable[[], Any], models_dir: Path, name: str
) -> tuple[Any, str, Path]:
    """(fitted model, version, artifact path): `fit` runs once per process per `key` (which
    starts with the agent kind); the pickle must hold no set (`_refuse_sets`), its hash is the
    version, and it is written once to `models_dir/<name>-<version>.pkl`."""
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is None:
            fitted = fit()
            _refuse_sets(fitted, "artifact", set())
            cached = (fitted, pickle.dumps(fitted, protocol=PICKLE_PROTOCOL))
            _CACHE[key] = cached
    fitted, blob = cached
    version = content_version(blob)
    artifact = Path(models_dir) / f"{name}-{version}.pkl"
    _write_once(artifact, blob)
    return fitted, version, artifact


def evict_trained(seed_sha256: str) -> None:
    """Forget the fitted models trained from a seed with this sha256 (every kind's key holds
    it fourth): retraining makes many one-off seeds, and a long-lived worker must not keep
    each fitted model and its pickle for ever. Agents built from them keep working."""
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if len(k) > 3 and k[3] == seed_sha256]:
            del _CACHE[key]


def read_artifact(path: Path, expected: type[T], what: str) -> tuple[T, str]:
    """(model, version) from a pickle `trained_artifact` wrote; the version is re-derived from
    its bytes. Pickles run code when loaded: only ever pass this module's own artifacts."""
    blob = Path(path).read_bytes()
    fitted = pickle.loads(blob)
    if not isinstance(fitted, expected):
        raise TaskError(f"{path}: not a {what}")
    return fitted, content_version(blob)


def parse_seed(data: bytes, path: Path, labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Seed JSONL -> (texts, labels), refusing anything the model must not learn from."""
    texts: list[str] = []
    targets: list[str] = []
    for _, text, label in seed_records(data, path, labels):
        texts.append(text)
        targets.append(label)
    if len(set(targets)) < 2:
        raise TaskError(f"{path}: the seed needs examples of at least two labels")
    return texts, targets


def _read_bytes(path: Path, agent: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TaskError(f"agent '{agent}': cannot read seed file {path}: {exc}") from exc


def _scrub(pipeline: Pipeline) -> None:
    for _, step in pipeline.steps:
        for attr in _PROCESS_DEPENDENT_ATTRS:
            if attr in vars(step):
                delattr(step, attr)
    _refuse_sets(pipeline, "pipeline", set())


def _refuse_sets(obj: Any, path: str, seen: set[int]) -> None:
    """Fail if any set survives in the fitted objects: its pickle order is process-dependent."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, set | frozenset):
        raise RuntimeError(f"{path} is a set; its pickled order would vary between processes")
    if isinstance(obj, dict):
        for key, value in obj.items():
            _refuse_sets(value, f"{path}[{key!r}]", seen)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _refuse_sets(value, f"{path}[{i}]", seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for attr, value in vars(obj).items():
            _refuse_sets(value, f"{path}.{attr}", seen)


def _write_once(path: Path, blob: bytes) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename: concurrent workers never see a half-written artifact, and since equal
    # names mean equal bytes, whichever rename lands last is as good as the first.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
