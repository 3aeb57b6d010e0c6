"""Review page sign-in: one row per reviewer with an argon2id password hash, the sha256 of
a pending one-time login link and the session generation. Roles stay in the roster.

Revision ID: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviewer_account",
        sa.Column("reviewer", sa.String(), primary_key=True),
        sa.Column("password_hash", sa.String()),
        sa.Column("password_set_at", sa.DateTime(timezone=True)),
        sa.Column("link_hash", sa.String(), unique=True),
        sa.Column("link_expires_at", sa.DateTime(timezone=True)),
        sa.Column("link_issued_by", sa.String()),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reviewer_account")
