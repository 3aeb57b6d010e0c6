"""Why a job ran when it was not new data: a relabel job names the drift check that asked for
it ("drift:<check id>"); its decisions and labels carry it through their job.

Revision ID: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job", sa.Column("reason", sa.String()))


def downgrade() -> None:
    op.drop_column("job", "reason")
