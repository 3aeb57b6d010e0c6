"""Quality gates: a gate policy's verdict on a snapshot, and the rollback a failed one triggers.

A task names its gate (`gate: quality_default` in the task file); each snapshot of one of its
datasets is scored (`SnapshotMetrics`) and judged by the gate's active version (or newest).
`pass` marks the snapshot version training-ready; the verdict, with the gate's version, sha256,
rule and the metrics it read, is stored on the snapshot row and in its manifest. A gate that
cannot judge (missing, not a gate, a rule error) gives `fail` with the error: not training-ready,
but no rollback, since that says nothing about the routing version.

Automatic rollback: a routing version is on probation from its activation until a snapshot
made by one of its jobs passes its gate. A snapshot that fails its gate during probation
rolls the activation back to the previous version (actor `gate:<id>@<v>`, the failed metrics
in the reason), in the same transaction as the snapshot row: both or neither. A version
made active by a rollback is not on probation; each activation starts a new probation,
which ends with the first passing snapshot after it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from agents.aggregate import AlphaTally
from catalog import db
from policy_rules.engine import Policy, PolicyError


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


async def load_gate(
    conn: AsyncConnection, policies_dir: Path, gate_id: str
) -> tuple[Policy | None, str | None]:
    """The gate's active version (or newest), or the reason it cannot judge."""
    row = await db.active_policy(conn, gate_id)
    ref = f"{gate_id}@{row.version}" if row is not None else gate_id
    try:
        gate = Policy.load(policies_dir, ref)
    except PolicyError as err:
        return None, f"gate {ref} cannot be loaded: {err}"
    if gate.kind != "gate":
        return None, f"{gate.ref} is a {gate.kind} policy, not a gate (kind: gate)"
    if row is not None and row.sha256 != gate.ref.sha256:
        return None, f"active gate {gate.ref} changed on disk since it was activated"
    return gate, None


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


async def rollback_on_failure(
    conn: AsyncConnection, *, job_id: str, subject: str, judged: dict[str, Any], at: Any
) -> str | None:
    """Roll back the job's routing version if it is on probation; returns 'id: vA -> vB'."""
    if judged["outcome"] == "pass" or judged.get("error"):
        return None  # a gate that could not judge says nothing against the routing version
    job = await db.job(conn, job_id)
    if job is None:
        return None  # a review-driven snapshot has no routing version of its own
    await db.lock_activations(conn)
    rows = await db.activations(conn, job.policy_id)
    if not rows or rows[-1].version != job.policy_version or rows[-1].action != "activate":
        return None
    if await db.passed_gate_since(
        conn, policy_id=job.policy_id, version=job.policy_version, since=rows[-1].at
    ):
        return None
    target = db.rollback_target(rows)
    if target is None:
        return None
    earlier = next(r for r in reversed(rows) if r.version == target)
    gate = f"{judged.get('policy', '?')}@{judged.get('version', '?')}"
    failed = ", ".join(f"{k} = {_fmt(v)}" for k, v in judged.get("read", {}).items())
    reason = (
        f"snapshot {subject} failed gate {gate} (rule {judged.get('rule', '?')}"
        f"{': ' + failed if failed else ''})"
    )
    await db.record_activation(
        conn,
        {
            "policy_id": job.policy_id,
            "version": target,
            "sha256": earlier.sha256,
            "action": "rollback",
            "actor": f"gate:{gate}",
            "reason": reason,
            "at": at,
        },
    )
    return f"{job.policy_id}: v{job.policy_version} -> v{target}"


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
