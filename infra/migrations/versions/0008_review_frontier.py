"""The review frontier: a routed item waits in the catalog (review_task.state = 'queued',
with its priority) until its dataset has room for another open ReviewItem workflow.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("decision", sa.Column("priority", sa.Float()))
    op.add_column("review_task", sa.Column("task", sa.String()))
    op.add_column("review_task", sa.Column("priority", sa.Float()))
    # The frontier's two questions: how many are open, and which waiting item is next.
    op.create_index("ix_review_task_frontier", "review_task", ["dataset", "state", "priority"])


def downgrade() -> None:
    op.drop_index("ix_review_task_frontier", table_name="review_task")
    op.drop_column("review_task", "priority")
    op.drop_column("review_task", "task")
    op.drop_column("decision", "priority")
