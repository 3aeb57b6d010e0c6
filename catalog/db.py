"""Catalog access: the engine, migrations, and the few statements the activities need.

Every write is keyed by workflow state and uses `ON CONFLICT DO NOTHING`, so a retried
activity repeats nothing. Functions take an open connection; the caller owns the
transaction, which is what makes one chunk's votes, decisions, labels and audit event land
together or not at all.

This module is the facade callers use (`from catalog import db; db.create_job(...)`); the
statements live by domain:
- `catalog.engine`: the engine, migrations, table handles (`T_*`), `_insert_ignore`;
- `catalog.auditlog`: the audit hash chain's writer (`catalog.audit` verifies it);
- `catalog.jobs`: job rows, ingest, chunks' items and outcomes, a job's provenance;
- `catalog.labels`: current labels, their history and the votes behind them;
- `catalog.snapshots`: snapshot rows, versions and per-version changes;
- `catalog.reviews`: items routed to people, review tasks, reviews;
- `catalog.frontier`: the review frontier (queued review tasks, at most `open_limit` open);
- `catalog.label_issues`: labels confident learning flagged, and the reviews they queue;
- `catalog.agent_versions`: agents retrained on reviewers' labels, promoted or refused;
- `catalog.rescore`: the backlog a re-score reads and the reviews it supersedes;
- `catalog.drift`: the windows a drift check compares, and the checks;
- `catalog.gold`: gold labels;
- `catalog.reliability`: fitted agent-reliability models and what they are scored on;
- `catalog.policies`: policy activations and rollbacks (`activate`, `rollback_versions`:
  the operator's transaction, refused with `ActivationRefused`);
- `catalog.shadows`: shadow runs of candidate policy versions (`start_shadow`,
  `stop_shadow`, refused with `ShadowRefused`);
- `catalog.datasets`: dataset versions, diffs, histories, leaks; `restore_labels` (a
  dataset rollback);
- `catalog.imports`: labels made elsewhere (`import_check`, then `record_import`);
- `catalog.rows`: the typed rows these return.
"""

from __future__ import annotations

from catalog.agent_versions import (
    PROMOTED,
    REFUSED,
    AgentVersionRow,
    agent_versions,
    human_examples,
    job_started_at,
    learned_from,
    promoted_versions,
    record_agent_version,
)
from catalog.auditlog import AUDIT_LOCK, GENESIS_HASH, append_audit, audit_head, event_hash
from catalog.datasets import Restored, restore_labels
from catalog.drift import (
    Decided,
    Reference,
    agent_labeled,
    check_of,
    decided,
    drift_checks,
    newest_job_items,
    newest_job_policy,
    record_drift_check,
    reviews_of,
)
from catalog.drift import reference as drift_reference
from catalog.engine import (
    BATCH_ROWS,
    MIGRATIONS,
    T_ACTIVATION,
    T_AGENT_VERSION,
    T_AUDIT,
    T_DECISION,
    T_DRIFT_CHECK,
    T_GOLD,
    T_HELDOUT,
    T_ITEM,
    T_JOB,
    T_JOB_ITEM,
    T_LABEL,
    T_LABEL_ISSUE,
    T_REJECTED,
    T_RELIABILITY,
    T_REVIEW,
    T_REVIEW_TASK,
    T_SHADOW,
    T_SHADOW_DECISION,
    T_SNAPSHOT,
    T_SNAPSHOT_CHANGE,
    T_VOTE,
    make_engine,
    migrate,
)
from catalog.frontier import (
    FrontierCounts,
    FrontierRow,
    claim_frontier,
    fail_frontier_rows,
    frontier_counts,
    frontier_policy,
    mark_frontier_open,
    queue_item_reviews,
)
from catalog.gold import gold_labels, gold_of_task, record_gold, upsert_gold
from catalog.imports import ImportCheck, import_check, record_import
from catalog.jobs import (
    assign_splits,
    chunk_items,
    claim_job,
    create_job,
    dataset_task,
    decided_outcomes,
    existing_jobs,
    finish_job,
    job,
    job_agents_and_policies,
    record_chunk,
    record_ingest,
    set_job_counts,
)
from catalog.label_issues import (
    LABEL_ISSUE_RULE,
    CurrentLabel,
    FlaggedLabel,
    labels_to_verify,
    queue_label_issue_reviews,
    record_label_issues,
)
from catalog.labels import current_label_votes, current_labels, lock_labels, set_labels
from catalog.models import utcnow
from catalog.policies import (
    ACTIVATION_LOCK,
    ActivationRefused,
    activate,
    activations,
    active_policy,
    lock_activations,
    passed_gate_since,
    record_activation,
    rollback_target,
    rollback_versions,
)
from catalog.reliability import (
    job_votes_and_decisions,
    record_reliability,
    reliability,
    store_reliability,
)
from catalog.rescore import (
    SUPERSEDED,
    BacklogItem,
    backlog,
    backlog_datasets,
    create_rescore_job,
    review_superseded,
    supersede_reviews,
)
from catalog.reviews import (
    close_review_task,
    insert_review,
    item_redactions,
    item_text,
    open_review_tasks,
    record_reviews,
    reviewer_stats,
    routed_items,
    votes_by_item,
    votes_of,
)
from catalog.rows import (
    ActivationRow,
    JobDecisionRow,
    JobRow,
    JobVoteRow,
    ShadowExampleRow,
    ShadowRow,
    SnapshotRow,
)
from catalog.shadows import (
    ShadowRefused,
    attach_shadow,
    detach_shadow,
    shadow_confusion,
    shadow_examples,
    shadows,
    start_shadow,
    stop_shadow,
)
from catalog.snapshots import (
    all_versions,
    insert_changes,
    insert_snapshot,
    latest_snapshot,
    lock_dataset_snapshots,
    newest_manifests,
    next_snapshot_version,
    snapshot_for_job,
)

__all__ = [
    # engine
    "BATCH_ROWS",
    "MIGRATIONS",
    "T_ACTIVATION",
    "T_AGENT_VERSION",
    "T_AUDIT",
    "T_DECISION",
    "T_DRIFT_CHECK",
    "T_GOLD",
    "T_HELDOUT",
    "T_ITEM",
    "T_JOB",
    "T_JOB_ITEM",
    "T_LABEL",
    "T_LABEL_ISSUE",
    "T_REJECTED",
    "T_RELIABILITY",
    "T_REVIEW",
    "T_REVIEW_TASK",
    "T_SHADOW",
    "T_SHADOW_DECISION",
    "T_SNAPSHOT",
    "T_SNAPSHOT_CHANGE",
    "T_VOTE",
    "make_engine",
    "migrate",
    "utcnow",
    # audit log
    "AUDIT_LOCK",
    "GENESIS_HASH",
    "append_audit",
    "audit_head",
    "event_hash",
    # jobs and chunks
    "assign_splits",
    "chunk_items",
    "claim_job",
    "create_job",
    "dataset_task",
    "decided_outcomes",
    "existing_jobs",
    "finish_job",
    "job",
    "job_agents_and_policies",
    "record_chunk",
    "record_ingest",
    "set_job_counts",
    # labels
    "current_label_votes",
    "current_labels",
    "lock_labels",
    "set_labels",
    # snapshots
    "insert_changes",
    "insert_snapshot",
    "latest_snapshot",
    "all_versions",
    "newest_manifests",
    "item_text",
    "item_redactions",
    "insert_review",
    "close_review_task",
    "votes_by_item",
    "lock_dataset_snapshots",
    "next_snapshot_version",
    "snapshot_for_job",
    # dataset rollback
    "Restored",
    "restore_labels",
    # imports
    "ImportCheck",
    "import_check",
    "record_import",
    # re-scoring
    "SUPERSEDED",
    "BacklogItem",
    "backlog",
    "backlog_datasets",
    "create_rescore_job",
    "review_superseded",
    "supersede_reviews",
    # human review
    "open_review_tasks",
    "record_reviews",
    "reviewer_stats",
    "routed_items",
    "votes_of",
    # drift checks
    "Decided",
    "Reference",
    "agent_labeled",
    "check_of",
    "newest_job_policy",
    "decided",
    "drift_checks",
    "drift_reference",
    "newest_job_items",
    "record_drift_check",
    "reviews_of",
    # the review frontier
    "FrontierCounts",
    "FrontierRow",
    "claim_frontier",
    "fail_frontier_rows",
    "frontier_counts",
    "frontier_policy",
    "mark_frontier_open",
    "queue_item_reviews",
    # agent versions
    "PROMOTED",
    "REFUSED",
    "AgentVersionRow",
    "agent_versions",
    "human_examples",
    "job_started_at",
    "learned_from",
    "promoted_versions",
    "record_agent_version",
    # label issues
    "LABEL_ISSUE_RULE",
    "CurrentLabel",
    "FlaggedLabel",
    "labels_to_verify",
    "queue_label_issue_reviews",
    "record_label_issues",
    # gold
    "gold_labels",
    "gold_of_task",
    "upsert_gold",
    "record_gold",
    # reliability
    "job_votes_and_decisions",
    "record_reliability",
    "reliability",
    "store_reliability",
    # policy activation
    "ACTIVATION_LOCK",
    "ActivationRefused",
    "activate",
    "activations",
    "active_policy",
    "lock_activations",
    "passed_gate_since",
    "record_activation",
    "rollback_target",
    "rollback_versions",
    # shadow runs
    "ShadowRefused",
    "attach_shadow",
    "detach_shadow",
    "shadow_confusion",
    "shadow_examples",
    "shadows",
    "start_shadow",
    "stop_shadow",
    # typed rows
    "ActivationRow",
    "JobDecisionRow",
    "JobRow",
    "JobVoteRow",
    "ShadowExampleRow",
    "ShadowRow",
    "SnapshotRow",
]
