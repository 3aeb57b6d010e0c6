"""Combine the agents' votes on one item into a single `Ensemble` the routing policy reads.

Role: pure aggregation, no thresholds. Whether an ensemble is good enough to accept is the
policy's decision (`policy_rules/`), not this module's.

`majority_vote` invariants:
- The winner is the label with the most non-abstaining votes; ties go to the higher summed
  confidence, then to the label name that sorts first. The result never depends on the
  order of the votes.
- agreement  = votes for the winner / non-abstaining votes (1.0 for a single vote, 0.0 when
  every agent abstained or none was asked).
- confidence = mean confidence of the winner's voters x agreement. Dissent therefore lowers
  confidence even when the winner's voters are sure; with no winner it is 0.0.
- label is None exactly when no agent voted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agents.base import Vote


@dataclass(frozen=True, kw_only=True, slots=True)
class Ensemble:
    label: str | None  # None when every agent abstained
    confidence: float  # mean confidence of the winner's voters x agreement
    agreement: float  # share of non-abstaining votes that agree with the winner
    votes: int  # number of agents asked
    abstained: int
    method: str = "majority_vote"


def majority_vote(votes: Sequence[Vote]) -> Ensemble:
    by_label: dict[str, list[float]] = {}
    for vote in votes:
        if vote.label is not None:
            by_label.setdefault(vote.label, []).append(vote.confidence)
    cast = sum(len(c) for c in by_label.values())
    abstained = len(votes) - cast
    if not cast:
        return Ensemble(
            label=None, confidence=0.0, agreement=0.0, votes=len(votes), abstained=abstained
        )
    # fsum: exact sums, so the tie-break cannot depend on the order votes arrived in.
    label, confidences = min(
        by_label.items(), key=lambda kv: (-len(kv[1]), -math.fsum(kv[1]), kv[0])
    )
    agreement = len(confidences) / cast
    mean = math.fsum(confidences) / len(confidences)
    return Ensemble(
        label=label,
        confidence=min(1.0, mean * agreement),
        agreement=agreement,
        votes=len(votes),
        abstained=abstained,
    )
