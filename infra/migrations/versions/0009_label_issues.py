"""Label issues: a current label that confident learning found likely wrong, once per label
version (`label_id`), with the review it was sent to.

Revision ID: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "label_issue",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("label_id", sa.BigInteger(), nullable=False, unique=True),
        sa.Column("dataset", sa.String(), nullable=False),
        sa.Column("item_id", sa.String(), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("suggested", sa.String(), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("verify_id", sa.String(), nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_label_issue_item", "label_issue", ["dataset", "item_id"])


def downgrade() -> None:
    op.drop_index("ix_label_issue_item", table_name="label_issue")
    op.drop_table("label_issue")
