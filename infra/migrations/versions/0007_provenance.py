"""Provenance: per-version snapshot changes, held-out datasets, item lookups, and an
append-only audit log.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Defence in depth beside the grants (README, "Running with a restricted database role"): even
# the owner cannot change or remove an audit event without first disabling this trigger.
APPEND_ONLY = (
    """
    CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER audit_event_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_event
        FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()
    """,
)


def upgrade() -> None:
    op.create_table(
        "snapshot_change",
        sa.Column("dataset", sa.String(), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.String(), primary_key=True),
        sa.Column("old_label", sa.String()),
        sa.Column("new_label", sa.String()),
        sa.Column("source", sa.String()),
        sa.Column("job_id", sa.String()),
    )
    op.create_index("ix_snapshot_change_item", "snapshot_change", ["dataset", "item_id"])
    op.create_table(
        "dataset_heldout",
        sa.Column("dataset", sa.String(), primary_key=True),
        sa.Column("heldout_for", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_vote_item", "vote", ["item_id"])
    op.create_index("ix_decision_item", "decision", ["item_id"])
    op.create_index("ix_label_item", "label", ["dataset", "item_id"])
    op.create_index("ix_item_id", "item", ["id"])
    for statement in APPEND_ONLY:  # one statement per execute (asyncpg prepares each)
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
    op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    op.drop_index("ix_item_id", "item")
    op.drop_index("ix_label_item", "label")
    op.drop_index("ix_decision_item", "decision")
    op.drop_index("ix_vote_item", "vote")
    op.drop_table("dataset_heldout")
    op.drop_table("snapshot_change")
