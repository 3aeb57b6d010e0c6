"""Quality gates, the pure part: a snapshot's metrics, a gate policy's verdict on them, and the
reason a failed verdict gives when it rolls a routing version back.

A task names its gate (`gate: quality_default` in the task file); each snapshot of one of its
datasets is scored (`SnapshotMetrics`) and judged by the gate's active version (or newest).
`pass` marks the snapshot version training-ready; the verdict, with the gate's version, sha256,
rule and the metrics it read, is stored on the snapshot row and in its manifest. A gate that
cannot judge (missing, not a gate, a rule error) gives `fail` with the error: not training-ready,
but no rollback, since that says nothing about the routing version.

Loading a gate's active version and the rollback itself need the catalog: `activities.gates`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agents.aggregate import AlphaTally
from policy_rules.model import Policy


@dataclass
class SnapshotMetrics:
    """Figures over one snapshot's labels, the inputs of a gate policy (`snapshot.*`)."""

    distribution: Counter[str] = field(default_factory=Counter)
    human: int = 0  # labels people gave (closed reviews)
    gold_count: int = 0  # labeled items with a known label for the task
    gold_correct: int = 0
    agreement: AlphaTally = field(default_factory=AlphaTally)

    def add(self, item_id: str, label: str, source: str, gold: dict[str, str]) -> None:
        self.distribution[label] += 1
        self.human += source == "human"
        if item_id in gold:
            self.gold_count += 1
            self.gold_correct += gold[item_id] == label

    def inputs(self, parent: dict[str, int] | None) -> dict[str, Any]:
        count = self.distribution.total()
        alpha = self.agreement.value()
        return {
            "snapshot.count": count,
            "snapshot.gold_count": self.gold_count,
            # 0.0 without gold items: a gate reads gold_accuracy together with gold_count.
            "snapshot.gold_accuracy": self.gold_correct / self.gold_count
            if self.gold_count
            else 0.0,
            "snapshot.review_rate": self.human / count if count else 0.0,
            # Krippendorff's alpha of the agents' votes on the labeled items; 1.0 when no item
            # had two votes to compare (nothing disagreed).
            "snapshot.agreement": 1.0 if math.isnan(alpha) else alpha,
            "snapshot.label_shift": shift(self.distribution, parent),
            "snapshot.parent_count": sum((parent or {}).values()),
        }


def shift(now: Counter[str], before: dict[str, int] | None) -> float:
    """Total variation distance between two label distributions; 0.0 if either is empty."""
    n, m = now.total(), sum((before or {}).values())
    if not n or not m or before is None:
        return 0.0
    labels = set(now) | set(before)
    return 0.5 * math.fsum(abs(now[k] / n - before.get(k, 0) / m) for k in labels)


def verdict(gate: Policy | None, error: str | None, metrics: dict[str, Any]) -> dict[str, Any]:
    """The gate's judgement as stored on the snapshot row and in its manifest."""
    if gate is None:
        return {"outcome": "fail", "error": error, "metrics": metrics}
    decision = gate.evaluate(metrics)
    rule = gate.rule(decision.rule_id)
    return {
        "policy": gate.ref.id,
        "version": gate.ref.version,
        "sha256": gate.ref.sha256,
        "outcome": decision.outcome,
        "rule": decision.rule_id,
        "error": decision.error,
        "metrics": metrics,
        # What the deciding rule read: the metric(s) a failure is about.
        "read": {name: metrics.get(name) for name in (rule.reads if rule else ())},
    }


def judged_by(judged: dict[str, Any]) -> str:
    """`<gate id>@<version>` of a verdict ('?' for what it does not say)."""
    return f"{judged.get('policy', '?')}@{judged.get('version', '?')}"


def rollback_reason(subject: str, judged: dict[str, Any]) -> str:
    """Why a failed verdict on snapshot `subject` rolls its routing version back."""
    failed = ", ".join(f"{k} = {_fmt(v)}" for k, v in judged.get("read", {}).items())
    return (
        f"snapshot {subject} failed gate {judged_by(judged)} (rule {judged.get('rule', '?')}"
        f"{': ' + failed if failed else ''})"
    )


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
