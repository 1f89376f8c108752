"""the cloud-side dispatcher lease (who holds the epoch the cloud issued) and portal sessions

Revision ID: 0008_leader_sessions
Revises: 0007_credentials
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_leader_sessions'
down_revision = '0007_credentials'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateways') as batch:
        batch.add_column(sa.Column('leader_node_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('leader_site_epoch', sa.BigInteger(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('leader_until', sa.Float(), nullable=False, server_default='0'))
    op.create_table(
        'portal_sessions',
        sa.Column('id_hash', sa.String(64), primary_key=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
    )
    op.create_index('ix_portal_sessions_expires_at', 'portal_sessions', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_portal_sessions_expires_at', 'portal_sessions')
    op.drop_table('portal_sessions')
    with op.batch_alter_table('gateways') as batch:
        batch.drop_column('leader_until')
        batch.drop_column('leader_site_epoch')
        batch.drop_column('leader_node_id')
