"""Shadow runs of candidate policy versions, and quality-gate verdicts on snapshots.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_shadow",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("policy_id", sa.String(), nullable=False),
        sa.Column("candidate_id", sa.String(), nullable=False),
        sa.Column("candidate_version", sa.Integer(), nullable=False),
        sa.Column("candidate_sha256", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("attached_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detached_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_policy_shadow_policy", "policy_shadow", ["policy_id"])
    op.create_table(
        "shadow_decision",
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("candidate_id", sa.String(), primary_key=True),
        sa.Column("candidate_version", sa.Integer(), primary_key=True),
        sa.Column("candidate_sha256", sa.String(), nullable=False),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("policy_id", sa.String(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("active_outcome", sa.String(), nullable=False),
        sa.Column("active_rule", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("error", sa.String()),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_shadow_decision_candidate",
        "shadow_decision",
        ["candidate_id", "candidate_version"],
    )
    op.add_column("snapshot", sa.Column("label_distribution", sa.JSON()))
    op.add_column("snapshot", sa.Column("training_ready", sa.Boolean()))
    op.add_column("snapshot", sa.Column("gate", sa.JSON()))


def downgrade() -> None:
    op.drop_column("snapshot", "gate")
    op.drop_column("snapshot", "training_ready")
    op.drop_column("snapshot", "label_distribution")
    op.drop_table("shadow_decision")
    op.drop_table("policy_shadow")
