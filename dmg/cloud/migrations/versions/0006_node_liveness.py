"""node liveness: a clean stop, the worker pool, and the dispatcher's lease epoch

Revision ID: 0006_node_liveness
Revises: 0005_shard_attempts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_node_liveness'
down_revision = '0005_shard_attempts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('stopped', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('pool_running', sa.Boolean(), nullable=False,
                                   server_default=sa.true()))
        batch.add_column(sa.Column('epoch', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('epoch')
        batch.drop_column('pool_running')
        batch.drop_column('stopped')
