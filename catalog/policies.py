"""Policy activation: which version of a policy is active, activations and rollbacks (each
audited), and whether a version has passed a snapshot gate since it became active.

`activate` and `rollback_versions` are the operator's transaction (the CLI's `policy
activate` / `policy rollback`): under the activation lock, a released version whose bytes
changed is refused before anything is written. They raise `ActivationRefused` with the message
to show; the caller owns the transaction, so a refusal writes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import append_audit
from catalog.engine import T_ACTIVATION, T_JOB, T_SNAPSHOT
from catalog.models import utcnow
from catalog.rows import ActivationRow

ACTIVATION_LOCK = 0x706F_6C69_6379  # "policy": one activation (or shadow change) at a time


class ActivationRefused(ValueError):
    """An activation or rollback the catalog refuses; the message says why. `failures` are the
    policy's failing cases, when that is the reason (shown before the message)."""

    def __init__(self, message: str, failures: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failures = tuple(failures)


async def activations(conn: AsyncConnection, policy_id: str | None = None) -> list[ActivationRow]:
    """Activation rows, oldest first (of one policy, or of all)."""
    query = select(T_ACTIVATION).order_by(T_ACTIVATION.c.id)
    if policy_id is not None:
        query = query.where(T_ACTIVATION.c.policy_id == policy_id)
    return [ActivationRow(**r._mapping) for r in await conn.execute(query)]


async def active_policy(conn: AsyncConnection, policy_id: str) -> ActivationRow | None:
    """The active version's row of a policy (its newest activation), or None."""
    a = T_ACTIVATION.c
    row = (
        await conn.execute(
            select(T_ACTIVATION).where(a.policy_id == policy_id).order_by(a.id.desc()).limit(1)
        )
    ).first()
    return None if row is None else ActivationRow(**row._mapping)


async def record_activation(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    """One activation (serialised per policy by the caller's advisory lock) + its audit event."""
    await conn.execute(insert(T_ACTIVATION).values(**row))
    await append_audit(
        conn,
        key=f"policy:{row['policy_id']}:{row['action']}:{row['at'].isoformat()}",
        actor=row["actor"],
        kind=kinds.policy_changed(row["action"]),
        subject=f"policy:{row['policy_id']}",
        payload={"version": row["version"], "sha256": row["sha256"], "reason": row["reason"]},
    )


async def lock_activations(conn: AsyncConnection) -> None:
    """Serialise activations, rollbacks and shadow changes (transaction-scoped)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ACTIVATION_LOCK})


async def activate(
    conn: AsyncConnection,
    policy_id: str,
    version: int,
    sha256: str,
    path: str,
    *,
    actor: str,
    reason: str,
    action: str = "activate",
    case_failures: Sequence[str] = (),
) -> None:
    """Make policy_id@version active (`action`: "activate" or "rollback"), audited.

    Refused, in this order, when the version's bytes (`sha256` of the file at `path`) differ
    from an earlier activation of it (released versions are immutable), or when
    `case_failures` (the policy's cases the caller ran, `policy_rules.engine.check_cases`)
    is not empty. Takes the activation lock until the transaction ends."""
    await lock_activations(conn)
    for row in await activations(conn, policy_id):
        if row.version == version and row.sha256 != sha256:
            raise ActivationRefused(
                f"{path} changed since it was activated (sha256 "
                f"{row.sha256[:12]} then, {sha256[:12]} now): released "
                "versions are immutable; add a new version instead"
            )
    if case_failures:
        raise ActivationRefused(
            f"{policy_id}@{version} does not pass its cases: not activated", case_failures
        )
    await record_activation(
        conn,
        {
            "policy_id": policy_id,
            "version": version,
            "sha256": sha256,
            "action": action,
            "actor": actor,
            "reason": reason,
            "at": utcnow(),
        },
    )


async def rollback_versions(conn: AsyncConnection, policy_id: str) -> tuple[int, int]:
    """(active version, version a rollback returns to) of a policy, under the activation lock
    (activate the second with action "rollback" in the same transaction); refused when the
    policy was never activated or only one version ever was."""
    await lock_activations(conn)
    rows = await activations(conn, policy_id)
    if not rows:
        raise ActivationRefused(f"policy {policy_id} was never activated: nothing to roll back to")
    current = rows[-1].version
    earlier = rollback_target(rows)
    if earlier is None:
        raise ActivationRefused(
            f"{policy_id}@{current} is the only version ever active: nothing to roll back to"
        )
    return current, earlier


def rollback_target(rows: Sequence[Any]) -> int | None:
    """The version a rollback returns to: the newest earlier activation of another version."""
    if not rows:
        return None
    current = rows[-1].version
    return next((r.version for r in reversed(rows[:-1]) if r.version != current), None)


async def passed_gate_since(
    conn: AsyncConnection, *, policy_id: str, version: int, since: datetime
) -> bool:
    """Whether a snapshot made by a job on policy_id@version passed its gate after `since`."""
    snap, j = T_SNAPSHOT.c, T_JOB.c
    found = await conn.scalar(
        select(func.count())
        .select_from(T_SNAPSHOT.join(T_JOB, j.id == snap.job_id))
        .where(
            j.policy_id == policy_id,
            j.policy_version == version,
            snap.training_ready.is_(True),
            snap.created_at > since,
        )
    )
    return bool(found)
