"""Drift detectors: each a small function comparing a recent window with a reference, with
what its statistic means and where its thresholds usually sit. A drift policy (`kind: drift`)
maps these metrics to an action; the detectors themselves decide nothing.

Input drift
- `text_auc`: a domain classifier (hashed TF-IDF + logistic regression) cross-validated on
  telling recent texts from reference texts; ROC AUC 0.5 = indistinguishable, 1.0 = fully
  separable. Stationary windows of a few hundred items sit near 0.5 ± 0.05; 0.65 and above
  is a change worth looking at. Hashing keeps it vocabulary-free and bounded in memory.
- `psi` / `tabular_drift`: the population stability index per feature over the reference's
  decile bins (< 0.1 stable, 0.1–0.25 moderate, > 0.25 shifted), and the two-sample
  Kolmogorov–Smirnov test (`scipy.stats.ks_2samp`) per feature, Bonferroni-corrected.
Prediction drift
- `label_shift`: total variation distance between the label distributions (0 = same,
  1 = disjoint); `mean_confidence`, `abstention_rates` per agent.
Quality drift
- `override_rate`: the share of human reviews disagreeing with the ensemble's label;
  `gold_accuracy`: the share of gold checks answered right.

scipy and scikit-learn are used where they fit (KS, ROC AUC, the classifier) rather than code
of our own; streams of single values would suit river's ADWIN, but every check here compares
two windows of items, which the two-sample statistics do directly.
Pure and deterministic (fixed folds and seeds): no I/O, no Temporal.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

MIN_PER_WINDOW = 20  # fewer items on either side: the statistic says nothing (NaN)
PSI_EPSILON = 1e-4  # an empty bin on one side counts as this share, not as zero


def text_auc(reference: Sequence[str], recent: Sequence[str], *, folds: int = 5) -> float:
    """ROC AUC of a classifier telling `recent` from `reference` out of fold (NaN when either
    window has fewer than MIN_PER_WINDOW texts). The windows are balanced by subsampling the
    larger one (deterministically), so the AUC measures content, not size."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    if min(len(reference), len(recent)) < MIN_PER_WINDOW:
        return math.nan
    n = min(len(reference), len(recent))
    ref, rec = _take(reference, n), _take(recent, n)
    texts = list(ref) + list(rec)
    y = np.array([0] * n + [1] * n)
    model = make_pipeline(
        HashingVectorizer(n_features=2**18, ngram_range=(1, 2), alternate_sign=False),
        TfidfTransformer(sublinear_tf=True),
        LogisticRegression(max_iter=1000, C=1.0),
    )
    cv = StratifiedKFold(n_splits=max(2, min(folds, n)), shuffle=True, random_state=0)
    scores = cross_val_predict(model, texts, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


def psi(
    reference: Sequence[float] | np.ndarray, recent: Sequence[float] | np.ndarray, *, bins: int = 10
) -> float:
    """Population stability index of `recent` against `reference`, over the reference's
    quantile bins: sum (r - a) * ln(r / a) over bins, with empty bins counted as a tiny
    share (PSI_EPSILON). NaN when either side has fewer than MIN_PER_WINDOW values."""
    a, r = np.asarray(reference, dtype=float), np.asarray(recent, dtype=float)
    if min(len(a), len(r)) < MIN_PER_WINDOW:
        return math.nan
    edges = np.unique(np.quantile(a, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant feature: did it stay constant?
        return 0.0 if np.all(r == a[0]) else float("inf")
    inner = edges[1:-1]
    share_a = np.bincount(np.searchsorted(inner, a, side="right"), minlength=len(edges) - 1)
    share_r = np.bincount(np.searchsorted(inner, r, side="right"), minlength=len(edges) - 1)
    pa = np.maximum(share_a / len(a), PSI_EPSILON)
    pr = np.maximum(share_r / len(r), PSI_EPSILON)
    return float(np.sum((pr - pa) * np.log(pr / pa)))


def tabular_drift(reference: np.ndarray, recent: np.ndarray) -> dict[str, float]:
    """Per feature PSI and KS: the largest PSI, the smallest Bonferroni-corrected KS p-value,
    and how many features have either PSI > 0.25 or a corrected p-value < 0.01."""
    from scipy.stats import ks_2samp

    a, r = np.atleast_2d(reference), np.atleast_2d(recent)
    if a.shape[1] != r.shape[1]:
        raise ValueError(f"{a.shape[1]} reference features, {r.shape[1]} recent ones")
    if min(len(a), len(r)) < MIN_PER_WINDOW:
        return {"psi_max": math.nan, "ks_p_min": math.nan, "features_drifted": math.nan}
    features = a.shape[1]
    psis = [psi(a[:, j], r[:, j]) for j in range(features)]
    pvalues = [min(1.0, ks_2samp(a[:, j], r[:, j]).pvalue * features) for j in range(features)]
    drifted = sum(1 for p, q in zip(psis, pvalues, strict=True) if p > 0.25 or q < 0.01)
    return {"psi_max": max(psis), "ks_p_min": min(pvalues), "features_drifted": float(drifted)}


def label_shift(reference: Mapping[str, int], recent: Mapping[str, int]) -> float:
    """Total variation distance between two label counts (0.0 when either is empty)."""
    n, m = sum(recent.values()), sum(reference.values())
    if not n or not m:
        return 0.0
    labels = set(reference) | set(recent)
    return 0.5 * math.fsum(abs(recent.get(k, 0) / n - reference.get(k, 0) / m) for k in labels)


def mean_confidence(confidences: Sequence[float]) -> float:
    return float(np.mean(confidences)) if len(confidences) else math.nan


def abstention_rates(votes: Sequence[tuple[str, str | None]]) -> dict[str, float]:
    """Per agent, the share of its votes that abstained (label None)."""
    asked, abstained = Counter[str](), Counter[str]()
    for agent, label in votes:
        asked[agent] += 1
        abstained[agent] += label is None
    return {agent: abstained[agent] / asked[agent] for agent in sorted(asked)}


def override_rate(pairs: Sequence[tuple[str, str | None]]) -> float:
    """Share of (human label, ensemble label) pairs where people disagreed with the agents
    (NaN with no reviews)."""
    if not pairs:
        return math.nan
    return sum(1 for human, machine in pairs if human != machine) / len(pairs)


def gold_accuracy(correct: Sequence[bool]) -> float:
    return sum(correct) / len(correct) if correct else math.nan


def _take(values: Sequence[str], n: int) -> list[str]:
    """`n` of `values`, spread evenly and always the same ones."""
    if len(values) <= n:
        return list(values)
    step = len(values) / n
    return [values[int(i * step)] for i in range(n)]
