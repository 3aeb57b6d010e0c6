"""A scikit-learn classifier on numeric feature vectors carried as text.

Role: the agent for tabular (and small-image) tasks. Each item's text is a vector of numbers
separated by spaces or by commas ("0 0 5 13 ..." for a `digits` image, "5.1,3.5,1.4" for a
table row). `TabularAgent.from_seed` parses the seed JSONL (fields `text` and `label`), fits one
of a small set of classifiers on all columns or on a chosen subset of them (`features`, which
lets a task build deliberately weak, diverse agents), pickles it and names the result by the
hash of the pickled bytes.

Models (`model`), each with its scikit-learn defaults overridden by `params`:
- "logreg": LogisticRegression (max_iter=5000, random_state), "naive_bayes": GaussianNB,
  "tree": DecisionTreeClassifier (random_state; pass max_depth in params to keep it shallow),
  "knn": KNeighborsClassifier, "centroid": NearestCentroid.
- Confidence is the predicted probability of the chosen label. NearestCentroid is given no
  `predict_proba` here (older scikit-learn releases have none, newer ones use their own
  variance model): its probabilities are a softmax over negative Euclidean distances to the
  class centroids, p_k ∝ exp(-d_k / T), with the temperature T fitted on the seed (maximum
  likelihood over a fixed grid, see `_fit_temperature`) and stored in the artifact.

Invariants:
- Training is deterministic (fixed `random_state`, seed file order), and the pickled bytes are
  identical across processes (checked like `agents.sklearn_model`: no set survives anywhere in
  the fitted artifact).
- `version` = first 16 hex of sha256 of the pickled artifact (model, params, feature columns,
  vector length, fitted estimator), written once to `models_dir/<name>-<version>.pkl`; a
  different feature subset or parameter is therefore a different version.
- The vector length is the seed's; every seed row must have it. A seed label outside the
  task's labels, or a seed row that does not parse, is a `TaskError` naming the file and line.
- `predict` never raises on input: a text that does not parse as a vector of the right length
  is an abstention whose rationale says why. Otherwise label = argmax of the probabilities
  (first maximum, in the model's sorted class order), confidence = that probability.
- Artifacts are pickles: load only files this module wrote (`from_artifact`).
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.tree import DecisionTreeClassifier

from agents.base import TaskError, Vote, abstain, canonical_json, clip_rationale
from agents.sklearn_model import _read_bytes, read_artifact, seed_records, trained_artifact

MODELS = ("logreg", "naive_bayes", "tree", "knn", "centroid")
# Defaults applied before the task's `params`; random_state is added for the models that use it.
_DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    # lbfgs needs up to ~2,500 iterations on half-image subsets of the digits seed.
    "logreg": {"max_iter": 5000},
    "naive_bayes": {},
    "tree": {},
    "knn": {},
    "centroid": {},
}
_RANDOMISED = frozenset({"logreg", "tree"})
# A plain decimal number: no "nan", "inf", "1_0" or hex, all of which float() accepts.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def parse_vector(text: str, length: int | None = None) -> np.ndarray:
    """Parse "1 2 3" or "1.5,2,3" into a float64 vector; ValueError saying what is wrong.

    Commas, if any, separate the values (whitespace around them is ignored); otherwise runs of
    whitespace do. With `length`, the vector must have exactly that many values.
    """
    tokens = [t.strip() for t in text.split(",")] if "," in text else text.split()
    if not tokens:
        raise ValueError("no numbers in the text")
    if length is not None and len(tokens) != length:
        raise ValueError(f"expected {length} numbers, got {len(tokens)}")
    values = np.empty(len(tokens), dtype=np.float64)
    for i, token in enumerate(tokens):
        if not _NUMBER_RE.fullmatch(token):
            shown = repr(token[:20]) if token else "empty"
            raise ValueError(f"value {i} is {shown}, not a number")
        values[i] = float(token)
        if not math.isfinite(values[i]):
            raise ValueError(f"value {i} ({token[:20]}) is out of range")
    return values


@dataclass(frozen=True, kw_only=True)
class TabularModel:
    """The pickled artifact: everything `predict` needs, and nothing process-dependent."""

    model: str  # one of MODELS
    params: dict[str, Any]  # the estimator's constructor arguments, keys sorted
    features: tuple[int, ...]  # columns of the vector the estimator sees, in this order
    n_features: int  # length of every input vector
    estimator: Any
    temperature: float | None  # "centroid" only: T of the softmax over -distance / T


class TabularAgent:
    kind = "tabular"

    def __init__(
        self,
        name: str,
        fitted: TabularModel,
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
        self._classes: list[str] = [str(c) for c in fitted.estimator.classes_]
        unknown = sorted(set(self._classes) - set(self.labels))
        if unknown:
            raise TaskError(
                f"agent '{name}': model predicts label(s) {unknown} outside the task's labels "
                f"({', '.join(self.labels)})"
            )
        self._columns = np.asarray(fitted.features, dtype=np.intp)
        self._describe = f"tabular {_describe(fitted)} on {len(fitted.features)} features"

    @classmethod
    def from_seed(
        cls,
        name: str,
        seed_path: Path,
        labels: Sequence[str],
        models_dir: Path,
        *,
        model: str,
        features: Sequence[int] | None = None,
        params: Mapping[str, Any] | None = None,
        random_state: int = 0,
    ) -> TabularAgent:
        labels = tuple(labels)
        if model not in MODELS:
            raise TaskError(
                f"agent '{name}': model must be one of {', '.join(MODELS)}, got {model!r}"
            )
        params = _check_params(name, params)
        if features is not None:
            features = _check_features(name, features)
        try:
            config = canonical_json(
                {"model": model, "features": features, "params": params, "rs": random_state}
            )
        except (TypeError, ValueError) as exc:
            raise TaskError(f"agent '{name}': params must be plain YAML values: {exc}") from exc
        seed_bytes = _read_bytes(seed_path, name)
        key = ("tabular", name, labels, hashlib.sha256(seed_bytes).hexdigest(), config)

        def fit() -> TabularModel:
            x, y = parse_tabular_seed(seed_bytes, seed_path, labels)
            return _fit(name, x, y, model, features, params, random_state)

        fitted, version, artifact = trained_artifact(key, fit, models_dir, name)
        return cls(name, fitted, version=version, labels=labels, artifact_path=artifact)

    @classmethod
    def from_artifact(cls, name: str, path: Path, labels: Sequence[str]) -> TabularAgent:
        """Load a pickle written by `from_seed`; the version is re-derived from its bytes."""
        fitted, version = read_artifact(path, TabularModel, "tabular agent artifact")
        return cls(name, fitted, version=version, labels=labels, artifact_path=path)

    def predict(self, texts: Sequence[str]) -> list[Vote]:
        votes: list[Vote | None] = [None] * len(texts)
        rows: list[np.ndarray] = []
        positions: list[int] = []
        for i, text in enumerate(texts):
            try:
                rows.append(parse_vector(text, self.model.n_features))
            except ValueError as exc:
                votes[i] = abstain(f"tabular: cannot read the features: {exc}")
            else:
                positions.append(i)
        if rows:
            proba = self._proba(np.vstack(rows)[:, self._columns])
            for row, i in enumerate(positions):
                k = int(np.argmax(proba[row]))  # first maximum: deterministic on exact ties
                confidence = min(1.0, max(0.0, float(proba[row, k])))
                votes[i] = Vote(
                    label=self._classes[k],
                    confidence=confidence,
                    rationale=clip_rationale(f"{self._describe}: p={confidence:.2f}"),
                )
        return [v for v in votes if v is not None]

    def _proba(self, x: np.ndarray) -> np.ndarray:
        if self.model.model == "centroid":
            assert self.model.temperature is not None
            centroids = np.asarray(self.model.estimator.centroids_, dtype=np.float64)
            distances = np.linalg.norm(x[:, None, :] - centroids[None, :, :], axis=2)
            return _softmax(-distances / self.model.temperature)
        return np.asarray(self.model.estimator.predict_proba(x), dtype=np.float64)


def parse_tabular_seed(
    data: bytes, path: Path, labels: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Seed JSONL -> (vectors, labels); every row must parse and have the first row's length."""
    vectors: list[np.ndarray] = []
    targets: list[str] = []
    for lineno, text, label in seed_records(data, path, labels):
        try:
            vector = parse_vector(text, len(vectors[0]) if vectors else None)
        except ValueError as exc:
            raise TaskError(f"{path}:{lineno}: field 'text': {exc}") from exc
        vectors.append(vector)
        targets.append(label)
    if len(set(targets)) < 2:
        raise TaskError(f"{path}: the seed needs examples of at least two labels")
    return np.vstack(vectors), targets


def _check_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise TaskError(f"agent '{name}': params must be a mapping of parameter names to values")
    return {k: params[k] for k in sorted(params)}


def _check_features(name: str, features: Sequence[int]) -> tuple[int, ...]:
    if isinstance(features, str | bytes) or not isinstance(features, Sequence) or not features:
        raise TaskError(f"agent '{name}': features must be a non-empty list of column numbers")
    # bool is an int subclass; True is not a column number.
    bad = [f for f in features if isinstance(f, bool) or not isinstance(f, int) or f < 0]
    if bad:
        raise TaskError(f"agent '{name}': features must be column numbers >= 0, got {bad[:5]}")
    if len(set(features)) != len(features):
        raise TaskError(f"agent '{name}': features lists a column twice")
    return tuple(int(f) for f in features)


def _make_estimator(model: str, params: Mapping[str, Any], random_state: int) -> Any:
    kwargs = dict(_DEFAULT_PARAMS[model])
    if model in _RANDOMISED:
        kwargs["random_state"] = random_state
    kwargs.update(params)
    if model == "logreg":
        return LogisticRegression(**kwargs)
    if model == "naive_bayes":
        return GaussianNB(**kwargs)
    if model == "tree":
        return DecisionTreeClassifier(**kwargs)
    if model == "knn":
        return KNeighborsClassifier(**kwargs)
    return NearestCentroid(**kwargs)


def _fit(
    name: str,
    x: np.ndarray,
    y: list[str],
    model: str,
    features: tuple[int, ...] | None,
    params: dict[str, Any],
    random_state: int,
) -> TabularModel:
    n_features = x.shape[1]
    columns = tuple(range(n_features)) if features is None else features
    outside = [c for c in columns if c >= n_features]
    if outside:
        raise TaskError(
            f"agent '{name}': feature column(s) {outside[:5]} outside the seed's "
            f"{n_features} columns (0-{n_features - 1})"
        )
    xs = x[:, np.asarray(columns, dtype=np.intp)]
    try:
        # Unknown or invalid params surface here: TypeError from the constructor, scikit-learn's
        # InvalidParameterError (a ValueError) from fit.
        estimator = _make_estimator(model, params, random_state)
        with warnings.catch_warnings():
            # Recent NearestCentroid fits a per-feature spread (for its own predict_proba, not
            # used here) and warns about constant pixels; the centroids are unaffected.
            warnings.filterwarnings(
                "ignore", message=".*within_class_std_dev_", category=UserWarning
            )
            estimator.fit(xs, np.asarray(y))
    except (TypeError, ValueError) as exc:
        raise TaskError(f"agent '{name}': cannot fit model '{model}' with {params}: {exc}") from exc
    temperature: float | None = None
    if model == "centroid":
        temperature = _fit_temperature(xs, y, estimator)
    return TabularModel(
        model=model,
        params=params,
        features=columns,
        n_features=n_features,
        estimator=estimator,
        temperature=temperature,
    )


def _fit_temperature(x: np.ndarray, y: list[str], estimator: NearestCentroid) -> float:
    """T minimising the seed's negative log-likelihood under softmax(-distance / T).

    A fixed grid (scale x 2**(i/8), i = -48..16, scale = mean distance of a seed row to its
    own centroid) keeps the result deterministic; the first minimum wins.
    """
    centroids = np.asarray(estimator.centroids_, dtype=np.float64)
    classes = [str(c) for c in estimator.classes_]
    own = np.asarray([classes.index(label) for label in y], dtype=np.intp)
    distances = np.linalg.norm(x[:, None, :] - centroids[None, :, :], axis=2)
    scale = float(np.mean(distances[np.arange(len(own)), own]))
    if scale <= 0:
        return 1.0  # every seed row on its centroid: any T gives the same (one-hot) answers
    grid = scale * 2.0 ** (np.arange(-48, 17) / 8)
    nll = [
        -float(np.sum(np.log(_softmax(-distances / t)[np.arange(len(own)), own] + 1e-300)))
        for t in grid
    ]
    return float(grid[int(np.argmin(nll))])


def _describe(fitted: TabularModel) -> str:
    est = fitted.estimator
    if fitted.model == "tree":
        depth = est.get_params()["max_depth"]
        return f"tree(depth={depth if depth is not None else est.get_depth()})"
    if fitted.model == "knn":
        return f"knn(k={est.get_params()['n_neighbors']})"
    return fitted.model


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))
