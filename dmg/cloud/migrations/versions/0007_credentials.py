"""credentials: the gateway key's public half, node public keys, sealed credentials

Revision ID: 0007_credentials
Revises: 0006_node_liveness
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_credentials'
down_revision = '0006_node_liveness'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateways') as batch:
        batch.add_column(sa.Column('credential_key', sa.String(length=64), nullable=False, server_default=''))
        batch.add_column(sa.Column('credential_sync', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('public_key', sa.String(length=64), nullable=False, server_default=''))
        batch.add_column(sa.Column('credentials_held', sa.JSON(), nullable=False,
                                   server_default=sa.text("'{}'")))
    op.create_table(
        'credentials',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('gateway_id', sa.Integer(), sa.ForeignKey('gateways.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('store', sa.String(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('sealed', sa.Text(), nullable=False),
        sa.Column('sealed_to', sa.String(length=64), nullable=False),
        sa.Column('set_at', sa.Float(), nullable=False),
        sa.UniqueConstraint('gateway_id', 'store', name='uq_credentials_gateway_store'),
    )
    op.create_index('ix_credentials_gateway_id', 'credentials', ['gateway_id'])


def downgrade() -> None:
    op.drop_index('ix_credentials_gateway_id', table_name='credentials')
    op.drop_table('credentials')
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('credentials_held')
        batch.drop_column('public_key')
    with op.batch_alter_table('gateways') as batch:
        batch.drop_column('credential_sync')
        batch.drop_column('credential_key')
