"""Drift detectors on small fixed data with known answers."""

from __future__ import annotations

import bz2
import csv
import hashlib
import math

import numpy as np
import pytest

from agents.drift import (
    abstention_rates,
    gold_accuracy,
    label_shift,
    mean_confidence,
    override_rate,
    psi,
    tabular_drift,
    text_auc,
)
from agents.samples import corpus_path, rotten_tomatoes_rows


def test_psi_is_zero_for_the_same_values_and_known_for_a_shift() -> None:
    reference = list(range(100))  # ten deciles of ten values each
    assert psi(reference, reference) == pytest.approx(0.0)
    # Everything now in the top decile: (1 - 0.1) ln(1 / 0.1) + 9 (1e-4 - 0.1) ln(1e-4 / 0.1)
    top = [95.0] * 100
    expected = 0.9 * math.log(10) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(reference, top) == pytest.approx(expected)
    assert math.isnan(psi(reference[:10], reference))  # too few to say
    assert psi([3.0] * 50, [3.0] * 50) == 0.0 and psi([3.0] * 50, [4.0] * 50) == math.inf


def test_tabular_drift_names_the_shifted_feature_only() -> None:
    rng = np.random.default_rng(0)
    reference, same = rng.normal(size=(500, 5)), rng.normal(size=(500, 5))
    moved = same.copy()
    moved[:, 2] += 1.0
    calm = tabular_drift(reference, same)
    assert calm["features_drifted"] == 0 and calm["psi_max"] < 0.1 and calm["ks_p_min"] > 0.01
    drifted = tabular_drift(reference, moved)
    assert drifted["features_drifted"] == 1 and drifted["psi_max"] > 0.25
    assert drifted["ks_p_min"] < 1e-10
    with pytest.raises(ValueError, match="5 reference features, 4 recent"):
        tabular_drift(reference, same[:, :4])


def test_text_auc_separates_other_text_and_not_a_shuffled_half() -> None:
    rows = sorted(rotten_tomatoes_rows(), key=lambda r: hashlib.sha256(r["text"].encode()).digest())
    texts = [r["text"] for r in rows]
    assert text_auc(texts[:300], texts[300:600]) < 0.6  # the same stream: near 0.5
    with bz2.open(corpus_path(), "rt", encoding="utf-8", newline="") as fh:
        plots = [r["text"] for r in csv.DictReader(fh) if r["category"] == "plot"]
    assert text_auc(texts[:150], plots[:150]) > 0.9  # film synopses are not reviews
    assert math.isnan(text_auc(texts[:10], plots[:10]))


def test_prediction_and_quality_metrics() -> None:
    assert label_shift({"a": 50, "b": 50}, {"a": 100}) == pytest.approx(0.5)
    assert label_shift({"a": 1}, {"a": 7}) == 0.0 and label_shift({}, {"a": 1}) == 0.0
    assert mean_confidence([0.5, 1.0]) == 0.75 and math.isnan(mean_confidence([]))
    votes = [("kw", None), ("kw", "a"), ("kw", None), ("lr", "a")]
    assert abstention_rates(votes) == {"kw": pytest.approx(2 / 3), "lr": 0.0}
    assert override_rate([("a", "a"), ("b", "a"), ("a", None), ("b", "b")]) == 0.5
    assert math.isnan(override_rate([])) and gold_accuracy([True, False, True]) == 2 / 3
