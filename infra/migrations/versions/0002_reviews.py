"""Human review: routed items and every reviewer submission.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review_task",
        sa.Column("dataset", sa.String(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("policy_id", sa.String(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("policy_sha256", sa.String(), nullable=False),
        sa.Column("gold_label", sa.String()),
        sa.Column("label", sa.String()),
        sa.Column("outcome", sa.String()),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_at", TS),
    )
    op.create_table(
        "review",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("review_key", sa.String(), nullable=False, unique=True),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("item_id", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("workflow_id", sa.String(), nullable=False),
        sa.Column("reviewer", sa.String(), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("via", sa.String(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String()),
        sa.Column("gold_label", sa.String()),
        sa.Column("correct", sa.Boolean()),
        sa.Column("submitted_at", TS, nullable=False),
    )
    op.create_index("ix_review_item", "review", ["dataset", "item_id"])


def downgrade() -> None:
    op.drop_table("review")
    op.drop_table("review_task")
