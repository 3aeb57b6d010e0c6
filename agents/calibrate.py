"""Calibrated routing: the confidence threshold at which auto-accepted labels meet a target
accuracy on a gold slice, and the accuracy / auto-accept curve behind it.

Invariants:
- Items are ranked by ensemble confidence; accepting "confidence >= t" accepts a prefix of
  that ranking (ties all in or all out), so each distinct confidence is one candidate.
- Never over-promise: the chosen threshold is the lowest candidate whose accepted set has at
  least `min_accepted` items and whose accuracy's Wilson lower bound (one-sided, at
  `confidence`, 95 % by default) reaches the target: the most coverage for which the slice
  shows, with that confidence, that the target holds. Accuracy is not monotone in t, so
  every candidate is checked. When none qualifies there is no threshold: callers accept
  nothing (`ACCEPT_NOTHING`) and say so, rather than fall back to a threshold that misses.
- The aggregator (majority, weighted, Dawid–Skene) is chosen by its accuracy on the same
  slice (`calibrate`) and recorded in the policy version with the threshold.
- Pure and deterministic: no I/O, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from agents.base import Vote
from agents.pipeline import Combined, combine
from agents.tasks import TaskSpec

# A min_confidence no ensemble confidence (at most 1.0) reaches: auto-accept nothing.
ACCEPT_NOTHING = 2.0


class CalibrationError(ValueError):
    """No threshold meets the target on this slice; the message gives the best one."""


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    accepted: int
    correct: int
    items: int

    @property
    def rate(self) -> float:
        return self.accepted / self.items if self.items else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.accepted if self.accepted else 0.0

    def lower(self, confidence: float = 0.95) -> float:
        """The Wilson score lower bound of the accuracy, one-sided at `confidence`."""
        return wilson_lower(self.correct, self.accepted, confidence)


def wilson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """Wilson score interval's lower bound for a proportion, one-sided at `confidence`: the
    accuracy the sample shows with that confidence (0 for an empty sample)."""
    if n <= 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def curve(confidences: Sequence[float], correct: Sequence[bool]) -> list[CurvePoint]:
    """One point per distinct confidence, from the strictest threshold to the loosest."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences for {len(correct)} outcomes")
    ranked = sorted(zip(confidences, correct, strict=True), key=lambda p: -p[0])
    points: list[CurvePoint] = []
    right = 0
    for accepted, (conf, ok) in enumerate(ranked, start=1):
        right += ok
        if accepted == len(ranked) or ranked[accepted][0] != conf:
            points.append(CurvePoint(conf, accepted, right, len(ranked)))
    return points


def find_threshold(
    confidences: Sequence[float],
    correct: Sequence[bool],
    *,
    target: float,
    min_accepted: int = 20,
    confidence: float = 0.95,
) -> CurvePoint:
    """The loosest threshold whose accepted set shows `target` accuracy at `confidence`
    (Wilson lower bound) on at least `min_accepted` items; CalibrationError when none does."""
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must be in (0, 1], got {target}")
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    points = [p for p in curve(confidences, correct) if p.accepted >= min_accepted]
    meeting = [p for p in points if p.lower(confidence) >= target]
    if not meeting:
        best = best_point(confidences, correct, min_accepted=min_accepted, confidence=confidence)
        detail = (
            f"the best shows {best.lower(confidence):.1%} ({best.accuracy:.1%} measured on "
            f"{best.accepted} items, confidence >= {best.threshold:.4f})"
            if best
            else f"fewer than {min_accepted} items"
        )
        raise CalibrationError(
            f"no threshold shows {target:.1%} accuracy with {confidence:.0%} confidence on "
            f"{len(confidences)} gold items with at least {min_accepted} accepted: {detail}"
        )
    return meeting[-1]  # the loosest threshold: the most items accepted


def best_point(
    confidences: Sequence[float],
    correct: Sequence[bool],
    *,
    min_accepted: int = 20,
    confidence: float = 0.95,
) -> CurvePoint | None:
    """The threshold with the highest accuracy lower bound among those accepting at least
    `min_accepted` items (ties: more items). For reporting only: it may miss the target."""
    points = [p for p in curve(confidences, correct) if p.accepted >= min_accepted]
    return max(points, key=lambda p: (p.lower(confidence), p.accepted), default=None)


# Tried in this order; a tie goes to the earlier (the simpler) one.
AGGREGATOR_ORDER = ("majority_vote", "weighted_vote", "dawid_skene")


@dataclass(frozen=True, slots=True)
class Calibration:
    """A calibration's outcome: the aggregator chosen (by accuracy on the slice), every
    aggregator's accuracy, and the threshold, or None when the target was not shown (then
    nothing is auto-accepted and `reason` says why)."""

    combined: Combined
    aggregator: str  # majority_vote | weighted_vote | dawid_skene
    accuracy: dict[str, float]  # each aggregator tried: share of slice items it labels right
    point: CurvePoint | None
    reason: str = ""

    @property
    def threshold(self) -> float:
        return self.point.threshold if self.point else ACCEPT_NOTHING


def calibrate(
    task: TaskSpec,
    keys: Sequence[str],
    per_agent: Sequence[Sequence[Vote]],
    truth: Sequence[str],
    *,
    target: float,
    min_accepted: int = 20,
    confidence: float = 0.95,
    choose: bool = True,
) -> Calibration:
    """Choose the aggregator (all three when `choose`, else the task's) by accuracy on the
    slice, then the threshold on its confidences (`find_threshold`)."""
    methods = AGGREGATOR_ORDER if choose else (task.aggregator,)
    tried = {m: combine(task, keys, per_agent, aggregator=m) for m in methods}
    accuracy = {
        m: sum(e.label == t for e, t in zip(c.ensembles, truth, strict=True)) / max(1, len(truth))
        for m, c in tried.items()
    }
    best = max(methods, key=lambda m: (accuracy[m], -methods.index(m)))
    combined = tried[best]
    right = [e.label == t for e, t in zip(combined.ensembles, truth, strict=True)]
    try:
        point = find_threshold(
            [e.confidence for e in combined.ensembles],
            right,
            target=target,
            min_accepted=min_accepted,
            confidence=confidence,
        )
    except CalibrationError as err:
        return Calibration(combined, best, accuracy, None, str(err))
    return Calibration(combined, best, accuracy, point)
