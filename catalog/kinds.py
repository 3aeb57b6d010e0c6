"""What an audit event records: its `kind`, spelled once (plain strings, no database driver:
`activities/ids.py` re-exports them). `labelfabric audit verify` and operators' queries
match on them, so they never change once released."""

from __future__ import annotations

JOB_STARTED = "job_started"
INGESTED = "ingested"
CHUNK_DECIDED = "chunk_decided"
SNAPSHOT = "snapshot"
GATE_VERDICT = "gate_verdict"
REVIEW_ACCEPTED = "review_accepted"
REVIEW_REFUSED = "review_refused"
GOLD_LOADED = "gold_loaded"
DATASET_ROLLBACK = "dataset_rollback"
DATASET_HELDOUT = "dataset_heldout"
IMPORT = "import"
EXPORT = "export"
POLICY_SHADOW_ATTACHED = "policy_shadow_attached"
POLICY_SHADOW_DETACHED = "policy_shadow_detached"
LABEL_ISSUES = "label_issues"
AGENT_PROMOTED = "agent_promoted"
AGENT_REFUSED = "agent_refused"
REVIEWS_SUPERSEDED = "reviews_superseded"
DRIFT_CHECKED = "drift_checked"
LABEL_CORRECTED = "label_corrected"  # a lead's new human label over a closed review's
REVIEWER_ACCOUNT = "reviewer_account"  # a login link issued or used, a password or role set


def job_finished(status: str) -> str:
    """`job_completed` or `job_failed`."""
    return f"job_{status}"


def review_closed(state: str) -> str:
    """`review_done`, `review_expired`, `review_errored`."""
    return f"review_{state}"


def policy_changed(action: str) -> str:
    """`policy_activate` or `policy_rollback`."""
    return f"policy_{action}"
