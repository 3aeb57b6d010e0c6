"""Verifying the audit log's hash chain, and the database role that can only append to it.

Every state change appends an `audit_event` whose hash is sha256(prev_hash + canonical JSON of
its key, time, actor, kind, subject and payload) (`auditlog.append_audit`). `verify` walks the
chain in id order and reports the first broken link:
- an altered event: its content no longer hashes to its `hash`;
- a deleted, inserted or reordered event: its `prev_hash` is not the hash of the event
  before it.
What the chain alone cannot show is the newest events removed together; snapshot manifests
in S3 (versioned, outside the database) record the chain's head at their time, and
`verify` checks each of those anchors is still in the chain. Rows the events describe are
covered too: each `chunk_decided` event carries digests of its chunk's decisions and votes
(with their rationale) (`rows_digest`), which `verify` recomputes from the rows. And so is
what `explain` shows: every item's text must hash to its id; every agent label must be what
its (digest-covered) decision accepted; every human label what its review's close event
says; at most one label of an item is current, and it is the newest; every review recorded
from an update or signal must match its event (reviewer, label, note, accepted).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from catalog import kinds
from catalog.auditlog import GENESIS_HASH, event_hash
from catalog.engine import T_AUDIT, T_DECISION, T_VOTE

DECISION_FIELDS = (
    "item_id",
    "outcome",
    "rule_id",
    "policy_id",
    "policy_version",
    "policy_sha256",
    "ensemble_label",
    "ensemble_confidence",
    "aggregator",
)
VOTE_FIELDS = ("item_id", "agent", "agent_version", "label", "confidence")
# Newer chunk events also cover what explain shows of a vote: its rationale.
VOTE_FIELDS_WITH_RATIONALE = (*VOTE_FIELDS, "rationale")
FINDINGS_PER_CHECK = 20  # a tampered table is named by its first findings, not all of them

_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass
class Verdict:
    events: int = 0
    head: str = GENESIS_HASH
    broken: str | None = None  # the first broken link, described
    broken_id: int | None = None
    anchors: int = 0  # manifest anchors found in the chain
    missing_anchors: list[str] = field(default_factory=list)
    rows_checked: int = 0  # chunks whose decisions and votes were re-hashed
    altered_rows: list[str] = field(default_factory=list)
    items_checked: int = 0  # items whose text was re-hashed against their id
    labels_checked: int = 0  # human labels checked against their review's close event
    reviews_checked: int = 0  # reviews checked against their events
    snapshots_checked: int = 0  # snapshot versions found in S3 (newest per dataset re-hashed)
    bad_snapshots: list[str] = field(default_factory=list)  # gone from S3, or other bytes

    @property
    def ok(self) -> bool:
        return (
            self.broken is None
            and not self.missing_anchors
            and not self.altered_rows
            and not self.bad_snapshots
        )


def _plain(value: Any) -> Any:
    # numpy scalars and the like as the float the database stores.
    return value if value is None or isinstance(value, str | bool | int) else float(value)


def rows_digest(rows: Iterable[Mapping[str, Any]], fields: tuple[str, ...]) -> str:
    """sha256 of the rows' fields, order-independent (sorted by their values)."""
    canonical = sorted([[_plain(row[f]) for f in fields] for row in rows], key=json.dumps)
    return hashlib.sha256(json.dumps(canonical, default=str).encode()).hexdigest()


def content_of(row: Any) -> dict[str, Any]:
    return {
        "key": row.event_key,
        "at": row.at.isoformat(),
        "actor": row.actor,
        "kind": row.kind,
        "subject": row.subject,
        "payload": dict(row.payload),
    }


async def verify(
    conn: AsyncConnection,
    *,
    anchors: dict[str, str] | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> Verdict:
    """Walk the chain; `anchors` maps a place (e.g. 'manifest of D@3') to a hash that must
    be in it."""
    out = Verdict()
    expected_prev = GENESIS_HASH
    prev_id: int | None = None
    wanted = {h: where for where, h in (anchors or {}).items() if h != GENESIS_HASH}
    found: set[str] = set()
    chunks: list[tuple[int, str, int, dict[str, Any]]] = []
    result = await conn.stream(
        select(T_AUDIT).order_by(T_AUDIT.c.id).execution_options(yield_per=5000)
    )
    async for row in result:
        out.events += 1
        if out.broken is None:
            after = f"event {prev_id}" if prev_id is not None else "the start of the chain"
            if row.prev_hash != expected_prev:
                out.broken_id = row.id
                out.broken = (
                    f"event {row.id} ({row.kind} {row.subject}): its prev_hash does not match "
                    f"the hash of {after}: an event before it was deleted, inserted or "
                    "reordered"
                )
            elif event_hash(row.prev_hash, content_of(row)) != row.hash:
                out.broken_id = row.id
                out.broken = (
                    f"event {row.id} ({row.kind} {row.subject}): its content does not match "
                    "its hash: the event was altered"
                )
        if row.hash in wanted:
            found.add(row.hash)
        if row.kind == kinds.CHUNK_DECIDED and "decisions_sha256" in row.payload:
            chunks.append((row.id, row.subject, row.payload["chunk"], dict(row.payload)))
        expected_prev, prev_id = row.hash, row.id
        if out.events % 50_000 == 0:
            progress(out.events)
    out.head = expected_prev
    out.anchors = len(found)
    out.missing_anchors = sorted(where for h, where in wanted.items() if h not in found)
    for event_id, job_id, chunk, payload in chunks:
        for table, fields, key in (
            (T_DECISION, DECISION_FIELDS, "decisions_sha256"),
            (T_VOTE, VOTE_FIELDS, "votes_sha256"),
            (T_VOTE, VOTE_FIELDS_WITH_RATIONALE, "votes_rationale_sha256"),
        ):
            if key not in payload:
                continue  # events from before that digest existed
            rows = await conn.execute(
                select(*(table.c[f] for f in fields)).where(
                    table.c.job_id == job_id, table.c.chunk == chunk
                )
            )
            if rows_digest((dict(r._mapping) for r in rows), fields) != payload.get(key):
                what = key.removesuffix("_sha256")
                out.altered_rows.append(
                    f"the {what} of {job_id} chunk {chunk} no longer match the digest in "
                    f"event {event_id}"
                )
        out.rows_checked += 1
        if out.rows_checked % 1000 == 0:
            progress(out.events)
    await verify_rows(conn, out)
    return out


async def verify_rows(conn: AsyncConnection, out: Verdict) -> None:
    """What explain shows, checked against what the chain vouches for (see the docstring)."""

    def found(what: str) -> None:
        if len(out.altered_rows) < 10 * FINDINGS_PER_CHECK:
            out.altered_rows.append(what)

    items = await conn.stream(
        text("SELECT dataset, id, text FROM item").execution_options(yield_per=5000)
    )
    bad = 0
    async for dataset, item_id, body in items:
        out.items_checked += 1
        if hashlib.sha256(body.encode()).hexdigest() != item_id and bad < FINDINGS_PER_CHECK:
            bad += 1
            found(f"item {item_id[:12]} in {dataset}: its text no longer hashes to its id")
    agent = await conn.execute(
        text(
            "SELECT l.dataset, l.item_id, l.job_id, l.label, d.outcome, d.ensemble_label "
            "FROM label l LEFT JOIN decision d ON d.job_id = l.job_id AND d.item_id = l.item_id "
            "WHERE l.source = 'agent' AND (d.item_id IS NULL OR d.outcome <> 'auto_accept' "
            "OR d.ensemble_label IS DISTINCT FROM l.label) LIMIT :n"
        ),
        {"n": FINDINGS_PER_CHECK},
    )
    for dataset, item_id, job_id, label, outcome, ensemble in agent:
        found(
            f"label of item {item_id[:12]} in {dataset} by {job_id}: {label!r}, but its "
            f"decision says {outcome or 'nothing'} {ensemble!r}"
        )
    human = await conn.stream(
        text(
            "SELECT l.dataset, l.item_id, l.job_id, l.label, l.reviewers, e.payload "
            "FROM label l LEFT JOIN audit_event e ON e.event_key = l.job_id || :closed "
            "WHERE l.source = 'human'"
        ).execution_options(yield_per=5000),
        {"closed": ":closed"},
    )
    async for dataset, item_id, job_id, label, reviewers, payload in human:
        out.labels_checked += 1
        said = payload or {}
        if said.get("label") != label or list(said.get("reviewers") or []) != list(reviewers):
            found(
                f"label of item {item_id[:12]} in {dataset} from review {job_id}: {label!r} "
                f"by {reviewers}, but its close event says {said.get('label')!r} by "
                f"{said.get('reviewers')}"
            )
    current = await conn.execute(
        text(
            "SELECT dataset, item_id FROM label GROUP BY dataset, item_id "
            "HAVING count(*) FILTER (WHERE is_current) > 1 "
            "OR max(id) FILTER (WHERE is_current) <> max(id) LIMIT :n"
        ),
        {"n": FINDINGS_PER_CHECK},
    )
    for dataset, item_id in current:
        found(f"current label of item {item_id[:12]} in {dataset} is not its newest label")
    reviews = await conn.stream(
        text(
            "SELECT r.review_key, r.reviewer, r.label, r.note, r.accepted, e.actor, e.kind, "
            "e.payload FROM review r LEFT JOIN audit_event e "
            "ON e.event_key = :prefix || r.review_key WHERE r.via IN ('update', 'signal')"
        ).execution_options(yield_per=5000),
        {"prefix": "review:"},
    )
    async for key, reviewer, label, note, accepted, actor, kind, payload in reviews:
        out.reviews_checked += 1
        said = payload or {}
        want = kinds.REVIEW_ACCEPTED if accepted else kinds.REVIEW_REFUSED
        if (actor, kind, said.get("label"), said.get("note")) != (reviewer, want, label, note):
            found(
                f"review {key[-40:]}: {reviewer!r} {label!r} "
                f"{'accepted' if accepted else 'refused'}, but its event says {actor!r} "
                f"{said.get('label')!r} {kind or 'nothing'}"
            )


def app_role_grants(role: str) -> list[str]:
    """Grants for the application's role (a checked identifier): full use of the catalog's
    tables except `audit_event`, where it may only INSERT and SELECT."""
    if not _ROLE_RE.fullmatch(role):
        raise ValueError(f"role name {role!r}: use lower-case letters, digits and _")
    return [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_event FROM {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ]


async def create_app_role(conn: AsyncConnection, role: str, password: str | None) -> None:
    """Create (or update) the login role, then grant. The password never enters SQL text
    written here: the server quotes it (`format('%L')`)."""
    grants = app_role_grants(role)
    exists = await conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
    verb = "ALTER" if exists else "CREATE"
    ddl = await conn.scalar(
        text(
            "SELECT format('%s ROLE %I LOGIN PASSWORD %L', CAST(:verb AS text), "
            "CAST(:role AS text), CAST(:pw AS text))"
        )
        if password is not None
        else text("SELECT format('%s ROLE %I LOGIN', CAST(:verb AS text), CAST(:role AS text))"),
        {"verb": verb, "role": role, "pw": password}
        if password is not None
        else {"verb": verb, "role": role},
    )
    await conn.exec_driver_sql(str(ddl))
    for statement in grants:
        await conn.exec_driver_sql(statement)
