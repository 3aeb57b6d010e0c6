"""Initial catalog: jobs, items, votes, decisions, labels, snapshots, audit events.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("dataset", sa.String(), nullable=False, index=True),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("policy_id", sa.String(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("policy_sha256", sa.String(), nullable=False),
        sa.Column("agents", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
    )
    op.create_table(
        "item",
        sa.Column("dataset", sa.String(), primary_key=True),
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source_uri", sa.String(), nullable=False),
        sa.Column("source_line", sa.Integer(), nullable=False),
        sa.Column("split", sa.String()),
        sa.Column("sensitivity", sa.String(), nullable=False),
        sa.Column("redactions", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "job_item",
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("ordinal", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.String(), nullable=False),
        sa.UniqueConstraint("job_id", "item_id"),
    )
    op.create_table(
        "rejected_record",
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("excerpt", sa.String(), nullable=False),
    )
    op.create_table(
        "vote",
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("agent", sa.String(), primary_key=True),
        sa.Column("agent_version", sa.String(), nullable=False),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("label", sa.String()),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("rationale", sa.String(), nullable=False),
        sa.Column("input_sha256", sa.String(), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
    )
    op.create_table(
        "decision",
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.String(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("policy_sha256", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("ensemble_label", sa.String()),
        sa.Column("ensemble_confidence", sa.Float(), nullable=False),
        sa.Column("aggregator", sa.String(), nullable=False),
        sa.Column("error", sa.String()),
        sa.Column("decided_at", TS, nullable=False),
    )
    op.create_index("ix_decision_dataset_outcome", "decision", ["dataset", "outcome"])
    op.create_table(
        "label",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("item_id", sa.String(), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("reviewers", sa.JSON(), nullable=False),
        sa.Column("supersedes_id", sa.BigInteger()),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("dataset", "item_id", "job_id", "source"),
    )
    op.create_index("ix_label_current", "label", ["dataset", "is_current"])
    op.create_table(
        "snapshot",
        sa.Column("dataset", sa.String(), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("s3_key", sa.String(), nullable=False),
        sa.Column("s3_version_id", sa.String(), nullable=False),
        sa.Column("manifest_key", sa.String(), nullable=False),
        sa.Column("manifest_version_id", sa.String(), nullable=False),
        sa.Column("manifest_sha256", sa.String(), nullable=False),
        sa.Column("content_sha256", sa.String(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("gate_result", sa.String()),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("dataset", "job_id"),
    )
    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("event_key", sa.String(), nullable=False, unique=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "audit_event",
        "snapshot",
        "label",
        "decision",
        "vote",
        "rejected_record",
        "job_item",
        "item",
        "job",
    ):
        op.drop_table(table)
