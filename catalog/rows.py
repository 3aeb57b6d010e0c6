"""Typed rows: what the catalog's queries return, one class per shape of result.

Each is a `NamedTuple` with exactly the columns its query selects, in the query's order, so a
caller reads it like the SQLAlchemy `Row` it replaces: by attribute (`row.status`), by index,
or by unpacking; `_asdict()` stands in for `Row._mapping`. Queries build them by column name
(`JobRow(**row._mapping)`), so a column added to a table and not here fails loudly rather
than shifting fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class JobRow(NamedTuple):
    """A `job` row (`select(T_JOB)`)."""

    id: str
    dataset: str
    task: str
    source: str
    policy_id: str
    policy_version: int
    policy_sha256: str
    agents: list[str]
    status: str
    items: int
    duplicates: int
    quarantined: int
    started_at: datetime
    finished_at: datetime | None
    reason: str | None = None  # "drift:<check id>" for a relabel job


class SnapshotRow(NamedTuple):
    """A `snapshot` row (`select(T_SNAPSHOT)`)."""

    dataset: str
    version: int
    job_id: str
    s3_key: str
    s3_version_id: str
    manifest_key: str
    manifest_version_id: str
    manifest_sha256: str
    content_sha256: str
    item_count: int
    gate_result: str | None
    label_distribution: dict[str, int] | None
    training_ready: bool | None
    gate: dict[str, Any] | None
    created_at: datetime


class ActivationRow(NamedTuple):
    """A `policy_activation` row (`select(T_ACTIVATION)`)."""

    id: int
    policy_id: str
    version: int
    sha256: str
    action: str
    actor: str
    reason: str
    at: datetime


class ShadowRow(NamedTuple):
    """A `policy_shadow` row (`select(T_SHADOW)`)."""

    id: int
    policy_id: str
    candidate_id: str
    candidate_version: int
    candidate_sha256: str
    actor: str
    reason: str
    attached_at: datetime
    detached_at: datetime | None


class ShadowExampleRow(NamedTuple):
    """An item where a shadow candidate decided otherwise (`shadows.shadow_examples`)."""

    active_outcome: str
    outcome: str
    active_rule: str
    rule_id: str
    error: str | None
    item_id: str
    job_id: str
    text: str
    ensemble_label: str | None
    ensemble_confidence: float


class JobVoteRow(NamedTuple):
    """A job's vote, as scored against known labels (`reliability.job_votes_and_decisions`)."""

    item_id: str
    agent: str
    label: str | None
    confidence: float


class JobDecisionRow(NamedTuple):
    """A job's decision, as scored against known labels
    (`reliability.job_votes_and_decisions`)."""

    item_id: str
    outcome: str
    ensemble_label: str | None
    ensemble_confidence: float
