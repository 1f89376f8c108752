"""encryption mode: the gateway's, and the one each node last reported

Revision ID: 0009_encryption_mode
Revises: 0008_leader_sessions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_encryption_mode'
down_revision = '0008_leader_sessions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gateways') as batch:
        batch.add_column(sa.Column('encryption_mode', sa.String(length=8), nullable=False,
                                   server_default='none'))
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('encryption', sa.String(length=8), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('encryption')
    with op.batch_alter_table('gateways') as batch:
        batch.drop_column('encryption_mode')
