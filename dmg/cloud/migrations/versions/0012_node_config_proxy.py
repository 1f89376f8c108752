"""the gateway's proxy; each node's configuration parts, peers seen and own figures

Revision ID: 0012_node_config_proxy
Revises: 0011_node_upgrade
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_node_config_proxy'
down_revision = '0011_node_upgrade'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateways') as batch:
        batch.add_column(sa.Column('proxy', sa.Text(), nullable=False, server_default=''))
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('config', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('peers_seen', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('proc_cpu_percent', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('proc_mem_bytes', sa.BigInteger(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('moved_in_bytes', sa.BigInteger(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('moved_out_bytes', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        for column in ('moved_out_bytes', 'moved_in_bytes', 'proc_mem_bytes', 'proc_cpu_percent',
                       'peers_seen', 'config'):
            batch.drop_column(column)
    with op.batch_alter_table('gateways') as batch:
        batch.drop_column('proxy')
