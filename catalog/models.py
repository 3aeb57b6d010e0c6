"""Catalog tables: the provenance of every item, vote, decision, label and snapshot.

Rows never cross the Temporal boundary; activities convert them to payload dataclasses.
Every primary or unique key derives from workflow state (job id, item id, agent, chunk), so
each write can be an `ON CONFLICT DO NOTHING` and a retried activity changes nothing.
The schema itself is owned by the Alembic migrations in `infra/migrations/`; these classes
must match them (a test compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), **kw))


class Job(SQLModel, table=True):
    id: str = Field(primary_key=True)  # the LabelDataset workflow id
    dataset: str = Field(index=True)
    task: str
    source: str
    policy_id: str
    policy_version: int
    policy_sha256: str
    agents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reason: str | None = None  # why, when not new data: "drift:<check id>" (a relabel job)
    status: str = "running"  # running | completed | failed
    items: int = 0
    duplicates: int = 0
    quarantined: int = 0
    started_at: datetime = _ts(nullable=False)
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Item(SQLModel, table=True):
    __table_args__ = (Index("ix_item_id", "id"),)
    dataset: str = Field(primary_key=True)
    id: str = Field(primary_key=True)  # sha256 of the text, hex
    text: str = Field(sa_column=Column(Text, nullable=False))
    source_uri: str
    source_line: int
    split: str | None = None
    sensitivity: str = "normal"
    # PII found at ingest (`agents/pii.py`): [{"type", "start", "end"}], never the value.
    redactions: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    created_at: datetime = _ts(nullable=False)


class JobItem(SQLModel, table=True):
    """Which items a job labels, in source order: chunks are ranges of `ordinal`."""

    __tablename__ = "job_item"
    __table_args__ = (UniqueConstraint("job_id", "item_id"),)
    job_id: str = Field(primary_key=True)
    ordinal: int = Field(primary_key=True)
    item_id: str


class RejectedRecord(SQLModel, table=True):
    """A source record refused at ingest, with where it was and why: nothing is dropped silently."""

    __tablename__ = "rejected_record"
    job_id: str = Field(primary_key=True)
    line: int = Field(primary_key=True)
    reason: str
    excerpt: str


class Vote(SQLModel, table=True):
    __table_args__ = (Index("ix_vote_item", "item_id"),)
    job_id: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    agent: str = Field(primary_key=True)
    agent_version: str
    dataset: str
    label: str | None = None  # None: the agent abstained
    confidence: float
    rationale: str
    input_sha256: str
    chunk: int
    latency_ms: float


class Decision(SQLModel, table=True):
    __table_args__ = (
        Index("ix_decision_dataset_outcome", "dataset", "outcome"),
        Index("ix_decision_item", "item_id"),
    )
    job_id: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    dataset: str
    chunk: int
    policy_id: str
    policy_version: int
    policy_sha256: str
    rule_id: str
    outcome: str  # auto_accept | human_review | quarantine | reject
    ensemble_label: str | None = None
    ensemble_confidence: float
    aggregator: str
    error: str | None = None
    priority: float | None = None  # routed to people: its place in the review frontier
    decided_at: datetime = _ts(nullable=False)


class Label(SQLModel, table=True):
    """Label history: a new label supersedes the current one; no row is ever overwritten
    except its `is_current` flag."""

    __table_args__ = (
        UniqueConstraint("dataset", "item_id", "job_id", "source"),
        Index("ix_label_current", "dataset", "is_current"),
        Index("ix_label_item", "dataset", "item_id"),
    )
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    dataset: str
    item_id: str
    label: str
    source: str  # agent | human
    job_id: str
    reviewers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    supersedes_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    is_current: bool = True
    created_at: datetime = _ts(nullable=False)


class LabelIssue(SQLModel, table=True):
    """A current label confident learning found likely wrong: once per label version."""

    __tablename__ = "label_issue"
    __table_args__ = (Index("ix_label_issue_item", "dataset", "item_id"),)
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    label_id: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    dataset: str
    item_id: str
    label: str
    suggested: str  # the class the out-of-fold model found most likely
    quality: float  # the out-of-fold probability of the given label
    verify_id: str  # the VerifyLabels run that flagged it
    flagged_at: datetime = _ts(nullable=False)


class AgentVersion(SQLModel, table=True):
    """An agent version retrained on reviewers' labels, and whether the gate promoted it."""

    __tablename__ = "agent_version"
    __table_args__ = (Index("ix_agent_version_promoted", "task", "agent", "state"),)
    task: str = Field(primary_key=True)
    agent: str = Field(primary_key=True)
    version: str = Field(primary_key=True)  # the artifact's content hash
    kind: str
    state: str  # promoted | refused
    s3_key: str
    s3_version_id: str
    # What it learned from: the seed's sha256, the human labels (count, sha256 of their ids).
    trained_on: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    gate: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))  # policy, rule, metrics
    retrain_id: str  # the Retrain run that made it
    decided_at: datetime = _ts(nullable=False)


class DriftCheck(SQLModel, table=True):
    """One drift check: its windows, metrics, the drift policy's verdict and the action."""

    __tablename__ = "drift_check"
    __table_args__ = (Index("ix_drift_check_dataset", "dataset", "checked_at"),)
    id: str = Field(primary_key=True)  # the DriftCheck workflow id
    dataset: str
    reference: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    window_items: int
    metrics: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    policy_id: str
    policy_version: int
    policy_sha256: str
    rule_id: str
    action: str  # none | alert | sample_review | relabel | retrain
    detail: str | None = None  # what was done about it
    checked_at: datetime = _ts(nullable=False)


class Snapshot(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("dataset", "job_id"),)
    dataset: str = Field(primary_key=True)
    version: int = Field(primary_key=True)
    job_id: str
    s3_key: str
    s3_version_id: str
    manifest_key: str
    manifest_version_id: str
    manifest_sha256: str
    content_sha256: str
    item_count: int
    gate_result: str | None = None  # the gate's outcome: pass | fail; None = no gate
    label_distribution: dict[str, int] | None = Field(default=None, sa_column=Column(JSON))
    training_ready: bool | None = None  # the gate passed (None: the task names no gate)
    # The verdict: gate policy id, version, sha256, rule, error, and the metrics it read.
    gate: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = _ts(nullable=False)


class AuditEvent(SQLModel, table=True):
    """Append-only; each row's hash covers its content and the previous row's hash."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    event_key: str = Field(unique=True)  # idempotency: a retried activity appends nothing new
    at: datetime = _ts(nullable=False)
    actor: str
    kind: str
    subject: str
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str
    hash: str


class ReviewTask(SQLModel, table=True):
    """An item routed to people: one per job and item, with its ReviewItem workflow."""

    __tablename__ = "review_task"
    # The frontier's two questions: how many are open, and which waiting item is next.
    __table_args__ = (Index("ix_review_task_frontier", "dataset", "state", "priority"),)
    dataset: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    job_id: str = Field(primary_key=True)
    workflow_id: str
    # queued (waiting in the frontier) | opening | awaiting | escalated | done | expired
    state: str
    task: str | None = None
    priority: float | None = None  # higher opens first
    rule_id: str
    policy_id: str
    policy_version: int
    policy_sha256: str
    gold_label: str | None = None
    label: str | None = None  # the label people agreed on
    outcome: str | None = None  # on expiry: the policy's final outcome (e.g. quarantine)
    opened_at: datetime = _ts(nullable=False)
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Review(SQLModel, table=True):
    """Every submission a reviewer makes, accepted or refused, with the reason."""

    __table_args__ = (
        Index("ix_review_item", "dataset", "item_id"),
        Index("ix_review_reviewer", "reviewer"),
    )
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    review_key: str = Field(unique=True)  # update id or signal sequence: retries add nothing
    dataset: str
    item_id: str
    job_id: str
    workflow_id: str
    reviewer: str
    label: str
    note: str
    via: str  # update | signal
    accepted: bool
    reason: str | None = None
    gold_label: str | None = None
    correct: bool | None = None  # against the gold label, when the item has one
    submitted_at: datetime = _ts(nullable=False)


class GoldLabel(SQLModel, table=True):
    """A label known in advance for a task's item (by text hash): review tasks on these items
    check the reviewer (`review.correct`). Loaded by `labelfabric review gold`."""

    __tablename__ = "gold_label"
    task: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    label: str
    source: str  # the file it came from
    source_sha256: str
    loaded_at: datetime = _ts(nullable=False)


class AgentReliability(SQLModel, table=True):
    """A fitted Dawid–Skene model: each agent's confusion matrix and the label priors, named
    by the hash of its parameters. Decisions cite it as `aggregator = dawid_skene@VERSION`."""

    __tablename__ = "agent_reliability"
    task: str = Field(primary_key=True)
    version: str = Field(primary_key=True)
    method: str  # dawid_skene
    agents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    model: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    fitted_on: str  # "job:{job_id}:chunk:{n}" or "calibrate:{sha256 of the gold slice}"
    items: int
    alpha: float | None = None  # Krippendorff's alpha of the votes it was fitted on
    created_at: datetime = _ts(nullable=False)


class PolicyActivation(SQLModel, table=True):
    """Append-only: each row makes one policy version the active one (activate or rollback).
    The newest row of a policy is its active version; the sha256 pins the file's bytes."""

    __tablename__ = "policy_activation"
    __table_args__ = (Index("ix_policy_activation_policy", "policy_id", "id"),)
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    policy_id: str
    version: int
    sha256: str
    action: str  # activate | rollback
    actor: str
    reason: str
    at: datetime = _ts(nullable=False)


class PolicyShadow(SQLModel, table=True):
    """A candidate version evaluated beside a policy on real traffic (`policy shadow`): every
    chunk of a job using `policy_id` also evaluates the candidate and records its decision."""

    __tablename__ = "policy_shadow"
    __table_args__ = (Index("ix_policy_shadow_policy", "policy_id"),)
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    policy_id: str  # the policy whose jobs carry the candidate
    candidate_id: str
    candidate_version: int
    candidate_sha256: str
    actor: str
    reason: str
    attached_at: datetime = _ts(nullable=False)
    detached_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class ShadowDecision(SQLModel, table=True):
    """What a shadowed candidate would have decided for an item, beside what was decided."""

    __tablename__ = "shadow_decision"
    __table_args__ = (Index("ix_shadow_decision_candidate", "candidate_id", "candidate_version"),)
    job_id: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    candidate_id: str = Field(primary_key=True)
    candidate_version: int = Field(primary_key=True)
    candidate_sha256: str
    dataset: str
    policy_id: str  # the version that decided
    policy_version: int
    active_outcome: str
    active_rule: str
    outcome: str  # the candidate's
    rule_id: str
    error: str | None = None
    decided_at: datetime = _ts(nullable=False)


class SnapshotChange(SQLModel, table=True):
    """What one snapshot version changed against its parent, per item: added (old_label
    None), removed (new_label None) or relabelled, with the source and job of the new label.
    An item's versions are the replay of its changes; `dataset diff` sums them."""

    __tablename__ = "snapshot_change"
    __table_args__ = (Index("ix_snapshot_change_item", "dataset", "item_id"),)
    dataset: str = Field(primary_key=True)
    version: int = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    old_label: str | None = None
    new_label: str | None = None
    source: str | None = None  # agent | human | rollback | import
    job_id: str | None = None


class DatasetHeldout(SQLModel, table=True):
    """`dataset` is the held-out set of `heldout_for`: no content may sit in both."""

    __tablename__ = "dataset_heldout"
    dataset: str = Field(primary_key=True)
    heldout_for: str
    actor: str
    reason: str
    declared_at: datetime = _ts(nullable=False)


class ReviewerAccount(SQLModel, table=True):
    """How a person signs in to the review page (worker/web/): credentials, never authority.
    Who may review what, and with which role, is the roster's (`config/roster.yaml`); a row
    whose reviewer left the roster signs nobody in. Secrets are stored only as hashes."""

    __tablename__ = "reviewer_account"
    reviewer: str = Field(primary_key=True)
    password_hash: str | None = None  # argon2id, PHC string
    password_set_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    # The pending one-time login link: sha256 of its token, until used or expired.
    link_hash: str | None = Field(default=None, unique=True)
    link_expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    link_issued_by: str | None = None
    # Sessions carry the generation they were signed at; a new password or a sign-out bumps
    # it, so every older session of this reviewer stops working at once.
    generation: int = 0
    updated_at: datetime = _ts(nullable=False)
