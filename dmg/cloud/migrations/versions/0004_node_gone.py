"""node gone: when the dispatcher saw every process of a node lose its broker connection

Revision ID: 0004_node_gone
Revises: 0003_cancel
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_node_gone'
down_revision = '0003_cancel'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('gone_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('gone_at')
