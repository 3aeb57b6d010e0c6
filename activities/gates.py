"""Quality gates, the catalog part: loading a gate's active version, and the rollback a failed
verdict triggers. What a gate judges and how (`SnapshotMetrics`, `verdict`): `policy_rules.gates`.

Automatic rollback: a routing version is on probation from its activation until a snapshot
made by one of its jobs passes its gate. A snapshot that fails its gate during probation
rolls the activation back to the previous version (actor `gate:<id>@<v>`, the failed metrics
in the reason), in the same transaction as the snapshot row: both or neither. A version
made active by a rollback is not on probation; each activation starts a new probation,
which ends with the first passing snapshot after it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import db
from policy_rules.engine import Policy, PolicyError
from policy_rules.gates import SnapshotMetrics, judged_by, rollback_reason, shift, verdict
from policy_rules.store import PolicyStore

# SnapshotMetrics, shift and verdict are re-exported for the activities that import them here.
__all__ = ["SnapshotMetrics", "load_gate", "rollback_on_failure", "shift", "verdict"]


async def load_gate(
    conn: AsyncConnection, policies: PolicyStore, gate_id: str
) -> tuple[Policy | None, str | None]:
    """The gate's active version (or newest), or the reason it cannot judge."""
    row = await db.active_policy(conn, gate_id)
    ref = f"{gate_id}@{row.version}" if row is not None else gate_id
    try:
        gate = policies.resolve(ref)
    except PolicyError as err:
        return None, f"gate {ref} cannot be loaded: {err}"
    if gate.kind != "gate":
        return None, f"{gate.ref} is a {gate.kind} policy, not a gate (kind: gate)"
    if row is not None and row.sha256 != gate.ref.sha256:
        return None, f"active gate {gate.ref} changed on disk since it was activated"
    return gate, None


async def rollback_on_failure(
    conn: AsyncConnection, *, job_id: str, subject: str, judged: dict[str, Any], at: Any
) -> str | None:
    """Roll back the job's routing version if it is on probation; returns 'id: vA -> vB'."""
    if judged["outcome"] == "pass" or judged.get("error"):
        return None  # a gate that could not judge says nothing against the routing version
    if not judged.get("metrics", {}).get("snapshot.count"):
        return None  # nor does an empty snapshot (quality_default@2 fails it: nothing to train on)
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
    await db.record_activation(
        conn,
        {
            "policy_id": job.policy_id,
            "version": target,
            "sha256": earlier.sha256,
            "action": "rollback",
            "actor": f"gate:{judged_by(judged)}",
            "reason": rollback_reason(subject, judged),
            "at": at,
        },
    )
    return f"{job.policy_id}: v{job.policy_version} -> v{target}"
