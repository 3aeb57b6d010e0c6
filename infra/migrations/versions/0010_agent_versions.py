"""Agent versions trained from reviewers' labels: what each learned from, where it lives in S3
(by object version), and the gate's verdict (promoted or refused).

Revision ID: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_version",
        sa.Column("task", sa.String(), primary_key=True),
        sa.Column("agent", sa.String(), primary_key=True),
        sa.Column("version", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("s3_key", sa.String(), nullable=False),
        sa.Column("s3_version_id", sa.String(), nullable=False),
        sa.Column("trained_on", sa.JSON(), nullable=False),
        sa.Column("gate", sa.JSON(), nullable=False),
        sa.Column("retrain_id", sa.String(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_agent_version_promoted", "agent_version", ["task", "agent", "state"])


def downgrade() -> None:
    op.drop_index("ix_agent_version_promoted", table_name="agent_version")
    op.drop_table("agent_version")
