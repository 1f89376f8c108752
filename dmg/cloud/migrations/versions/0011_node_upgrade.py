"""node upgrade: the upgrade asked of a node ("", "requested", "upgrading")

Revision ID: 0011_node_upgrade
Revises: 0010_node_sizing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_node_upgrade'
down_revision = '0010_node_sizing'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('upgrade', sa.String(length=16), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('upgrade')
