"""Label issues: which current labels (an agent's or a person's) are likely wrong.

Confident learning (Northcutt et al.; `cleanlab.filter.find_label_issues`) over out-of-fold
predicted probabilities: a model of the task's modality (TF-IDF + logistic regression on text,
logistic regression on a tabular task's numbers) is fitted k times on the other folds and
predicts each item it did not see, so an item's own label never vouches for itself.

Pure and deterministic for the same items (fixed folds and seeds): no I/O, no Temporal.
cleanlab (and with it pandas) is imported only when issues are looked for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_ITEMS = 30  # below this, k-fold estimates say nothing
MIN_PER_CLASS = 2  # a class needs items in two folds at least


@dataclass(frozen=True, slots=True)
class LabelIssue:
    index: int  # position in the inputs
    label: str  # the label given
    suggested: str  # the class the out-of-fold model finds most likely
    quality: float  # the out-of-fold probability of the given label (lower: more suspect)


def out_of_fold_probabilities(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    tabular: bool,
    folds: int,
) -> np.ndarray:
    """Each item's class probabilities (columns in `classes` order) from a model that did
    not see it, by stratified k-fold (k lowered to the rarest class's count)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = Counter(labels)
    k = max(2, min(folds, min(counts.values())))
    model = _model(tabular)
    x: Any = _vectors(texts) if tabular else list(texts)
    y = np.array([classes.index(lbl) for lbl in labels])
    present = sorted(set(y.tolist()))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=0)
    probs = cross_val_predict(model, x, y, cv=cv, method="predict_proba")
    out = np.zeros((len(labels), len(classes)))
    out[:, present] = probs  # classes nobody has keep probability 0
    return out


def find_issues(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    tabular: bool = False,
    folds: int = 5,
) -> list[LabelIssue]:
    """The likely wrong labels, most suspect first; [] when there is too little to judge
    (fewer than MIN_ITEMS items, or fewer than two classes with MIN_PER_CLASS items)."""
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts for {len(labels)} labels")
    unknown = sorted({lbl for lbl in labels if lbl not in classes})
    if unknown:
        raise ValueError(f"label(s) {', '.join(unknown)} not among {', '.join(classes)}")
    counts = Counter(labels)
    judged = [c for c in classes if counts[c] >= MIN_PER_CLASS]
    if len(texts) < MIN_ITEMS or len(judged) < 2:
        return []
    keep = [i for i, lbl in enumerate(labels) if lbl in judged]
    probs = out_of_fold_probabilities(
        [texts[i] for i in keep], [labels[i] for i in keep], judged, tabular=tabular, folds=folds
    )
    return issues_from_probabilities([labels[i] for i in keep], judged, probs, index=keep)


def issues_from_probabilities(
    labels: Sequence[str],
    classes: Sequence[str],
    probs: np.ndarray,
    index: Sequence[int] | None = None,
) -> list[LabelIssue]:
    """cleanlab's `find_label_issues` on given probabilities, most suspect first."""
    from cleanlab.filter import find_label_issues

    y = np.array([classes.index(lbl) for lbl in labels])
    ranked = find_label_issues(
        labels=y, pred_probs=probs, return_indices_ranked_by="self_confidence"
    )
    where = list(index) if index is not None else list(range(len(labels)))
    return [
        LabelIssue(
            index=where[i],
            label=labels[i],
            suggested=classes[int(np.argmax(probs[i]))],
            quality=float(probs[i, y[i]]),
        )
        for i in (int(j) for j in ranked)
    ]


def _model(tabular: bool) -> Any:
    from sklearn.linear_model import LogisticRegression

    if tabular:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    from agents.sklearn_model import make_pipeline as text_pipeline

    return text_pipeline()


def _vectors(texts: Sequence[str]) -> np.ndarray:
    from agents.tabular import parse_vector

    return np.stack([parse_vector(t) for t in texts])
