"""node metrics history (heartbeats as received, then 1-min and 10-min averages), and
what the portal asked of a node (limit, drain)

Revision ID: 0013_node_history
Revises: 0012_node_config_proxy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_node_history'
down_revision = '0012_node_config_proxy'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'node_samples',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('node_id', sa.Integer(), sa.ForeignKey('nodes.id', ondelete='CASCADE'), nullable=False),
        sa.Column('resolution', sa.Integer(), nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.Column('samples', sa.Integer(), nullable=False),
        sa.Column('cpu_percent', sa.Float(), nullable=False),
        sa.Column('memory_available', sa.Float(), nullable=False),
        sa.Column('running', sa.Float(), nullable=False),
        sa.Column('limit', sa.Float(), nullable=False),
        sa.Column('network_in', sa.Float(), nullable=False),
        sa.Column('network_out', sa.Float(), nullable=False),
    )
    op.create_index('ix_node_samples_node_resolution_at', 'node_samples', ['node_id', 'resolution', 'at'])
    op.create_table(
        'node_requests',
        sa.Column('node_id', sa.Integer(), sa.ForeignKey('nodes.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('limit', sa.Integer(), nullable=True),
        sa.Column('drain', sa.Boolean(), nullable=True),
        sa.Column('requested_at', sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('node_requests')
    op.drop_index('ix_node_samples_node_resolution_at', table_name='node_samples')
    op.drop_table('node_samples')
