"""Calibrated routing: the confidence threshold at which auto-accepted labels meet a target
accuracy on a gold slice, and the accuracy / auto-accept curve behind it.

Invariants:
- Items are ranked by ensemble confidence; accepting "confidence >= t" accepts a prefix of
  that ranking (ties all in or all out), so each distinct confidence is one candidate.
- The chosen threshold is the lowest candidate whose accepted set has at least
  `min_accepted` items and accuracy >= target: the most coverage that still meets the target
  on this slice. Accuracy is not monotone in t, so every candidate is checked.
- Pure and deterministic: no I/O, no randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
) -> CurvePoint:
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must be in (0, 1], got {target}")
    points = [p for p in curve(confidences, correct) if p.accepted >= min_accepted]
    meeting = [p for p in points if p.accuracy >= target]
    if not meeting:
        best = best_point(confidences, correct, min_accepted=min_accepted)
        detail = (
            f"the best is {best.accuracy:.1%} on {best.accepted} items (confidence >= "
            f"{best.threshold:.4f})"
            if best
            else f"fewer than {min_accepted} items"
        )
        raise CalibrationError(
            f"no threshold reaches {target:.1%} accuracy on {len(confidences)} gold items "
            f"with at least {min_accepted} accepted: {detail}"
        )
    return meeting[-1]  # the loosest threshold: the most items accepted


def best_point(
    confidences: Sequence[float], correct: Sequence[bool], *, min_accepted: int = 20
) -> CurvePoint | None:
    """The most accurate threshold accepting at least `min_accepted` items (ties: more items)."""
    points = [p for p in curve(confidences, correct) if p.accepted >= min_accepted]
    return max(points, key=lambda p: (p.accuracy, p.accepted), default=None)
