"""Shadow runs: candidate policy versions evaluated beside the deciding one on real traffic
(attached and detached under `policies.lock_activations`, each audited), and what they would
have decided differently.

`start_shadow` / `stop_shadow` are the operator's transaction (`policy shadow [--stop]`);
`ShadowRefused` carries the message to show."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import append_audit
from catalog.engine import T_DECISION, T_ITEM, T_SHADOW, T_SHADOW_DECISION
from catalog.models import utcnow
from catalog.policies import lock_activations
from catalog.rows import ShadowExampleRow, ShadowRow


class ShadowRefused(ValueError):
    """A shadow change the catalog refuses; the message says why."""


async def shadows(conn: AsyncConnection, policy_id: str | None = None) -> list[ShadowRow]:
    """Attached (not detached) shadow candidates, of one policy or of all, oldest first."""
    query = select(T_SHADOW).where(T_SHADOW.c.detached_at.is_(None)).order_by(T_SHADOW.c.id)
    if policy_id is not None:
        query = query.where(T_SHADOW.c.policy_id == policy_id)
    return [ShadowRow(**r._mapping) for r in await conn.execute(query)]


async def attach_shadow(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(insert(T_SHADOW).values(**row))
    await append_audit(
        conn,
        key=f"shadow:{row['candidate_id']}@{row['candidate_version']}:on:{row['attached_at']}",
        actor=row["actor"],
        kind=kinds.POLICY_SHADOW_ATTACHED,
        subject=f"policy:{row['policy_id']}",
        payload={
            "candidate": f"{row['candidate_id']}@{row['candidate_version']}",
            "sha256": row["candidate_sha256"],
            "reason": row["reason"],
        },
    )


async def detach_shadow(
    conn: AsyncConnection, shadow: ShadowRow, *, actor: str, reason: str, at: datetime
) -> None:
    await conn.execute(update(T_SHADOW).where(T_SHADOW.c.id == shadow.id).values(detached_at=at))
    await append_audit(
        conn,
        key=f"shadow:{shadow.id}:detached",
        actor=actor,
        kind=kinds.POLICY_SHADOW_DETACHED,
        subject=f"policy:{shadow.policy_id}",
        payload={
            "candidate": f"{shadow.candidate_id}@{shadow.candidate_version}",
            "reason": reason,
        },
    )


async def _attached(
    conn: AsyncConnection, policy_id: str, candidate_id: str, candidate_version: int
) -> list[ShadowRow]:
    return [
        s
        for s in await shadows(conn, policy_id)
        if (s.candidate_id, s.candidate_version) == (candidate_id, candidate_version)
    ]


async def start_shadow(
    conn: AsyncConnection,
    policy_id: str,
    candidate_id: str,
    candidate_version: int,
    candidate_sha256: str,
    *,
    actor: str,
    reason: str,
) -> ShadowRow | None:
    """Attach candidate_id@candidate_version beside `policy_id`'s jobs, audited, under the
    activation lock. Returns the existing attachment instead (writing nothing) when it is
    attached already, None when it is attached now."""
    await lock_activations(conn)
    attached = await _attached(conn, policy_id, candidate_id, candidate_version)
    if attached:
        return attached[0]
    await attach_shadow(
        conn,
        {
            "policy_id": policy_id,
            "candidate_id": candidate_id,
            "candidate_version": candidate_version,
            "candidate_sha256": candidate_sha256,
            "actor": actor,
            "reason": reason,
            "attached_at": utcnow(),
        },
    )
    return None


async def stop_shadow(
    conn: AsyncConnection,
    policy_id: str,
    candidate_id: str,
    candidate_version: int,
    *,
    actor: str,
    reason: str,
) -> None:
    """Detach candidate_id@candidate_version from `policy_id`, audited, under the activation
    lock; refused when it is not attached."""
    await lock_activations(conn)
    attached = await _attached(conn, policy_id, candidate_id, candidate_version)
    if not attached:
        raise ShadowRefused(f"{candidate_id}@{candidate_version} is not shadowing {policy_id}")
    for row in attached:
        await detach_shadow(conn, row, actor=actor, reason=reason, at=utcnow())


async def shadow_confusion(
    conn: AsyncConnection, candidate_id: str, version: int, policy_id: str | None = None
) -> list[tuple[str, str, int]]:
    """(decided outcome, candidate outcome, items) over every shadow decision of a candidate
    (beside jobs of `policy_id` only, when given)."""
    d = T_SHADOW_DECISION.c
    rows = await conn.execute(
        select(d.active_outcome, d.outcome, func.count())
        .where(
            d.candidate_id == candidate_id,
            d.candidate_version == version,
            d.policy_id == (policy_id or d.policy_id),
        )
        .group_by(d.active_outcome, d.outcome)
        .order_by(d.active_outcome, d.outcome)
    )
    return [(r[0], r[1], int(r[2])) for r in rows]


async def shadow_examples(
    conn: AsyncConnection,
    candidate_id: str,
    version: int,
    *,
    per_cell: int,
    policy_id: str | None = None,
) -> list[ShadowExampleRow]:
    """Up to `per_cell` items per (decided, candidate) pair where they differ, newest first,
    with the item's text, the ensemble's label and confidence, and both rules."""
    d, dec, it = T_SHADOW_DECISION.c, T_DECISION.c, T_ITEM.c
    ranked = (
        select(
            d.active_outcome,
            d.outcome,
            d.active_rule,
            d.rule_id,
            d.error,
            d.item_id,
            d.job_id,
            d.dataset,
            func.row_number()
            .over(partition_by=(d.active_outcome, d.outcome), order_by=d.decided_at.desc())
            .label("n"),
        )
        .where(
            d.candidate_id == candidate_id,
            d.candidate_version == version,
            d.policy_id == (policy_id or d.policy_id),
            d.active_outcome != d.outcome,
        )
        .subquery()
    )
    r = ranked.c
    rows = await conn.execute(
        select(
            r.active_outcome,
            r.outcome,
            r.active_rule,
            r.rule_id,
            r.error,
            r.item_id,
            r.job_id,
            it.text,
            dec.ensemble_label,
            dec.ensemble_confidence,
        )
        .join(T_ITEM, (it.dataset == r.dataset) & (it.id == r.item_id))
        .join(T_DECISION, (dec.job_id == r.job_id) & (dec.item_id == r.item_id))
        .where(r.n <= per_cell)
        .order_by(r.active_outcome, r.outcome, r.n)
    )
    return [ShadowExampleRow(**r._mapping) for r in rows]
