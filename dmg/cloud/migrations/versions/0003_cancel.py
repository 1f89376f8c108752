"""cancel: when an activity run was cancelled by a user

Revision ID: 0003_cancel
Revises: 0002_file_results
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003_cancel'
down_revision = '0002_file_results'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('activity_runs') as batch:
        batch.add_column(sa.Column('cancelled_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('activity_runs') as batch:
        batch.drop_column('cancelled_at')
