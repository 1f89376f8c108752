"""node sizing: what set each node's concurrent-job limit (cgroup, host, setting, scaled)

Revision ID: 0010_node_sizing
Revises: 0009_encryption_mode
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_node_sizing'
down_revision = '0009_encryption_mode'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('sized_by', sa.String(length=16), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('sized_by')
