"""shard attempts: every attempt of a shard, how it ended (issue 8 item 7)

Revision ID: 0005_shard_attempts
Revises: 0004_node_gone
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_shard_attempts'
down_revision = '0004_node_gone'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('shard_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('activity_run_id', sa.String(length=64), nullable=False),
    sa.Column('shard_id', sa.String(length=128), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=64), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('wait_reason', sa.Text(), nullable=False),
    sa.Column('files', sa.BigInteger(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('placed_at', sa.Float(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['activity_run_id'], ['activity_runs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['shard_id'], ['shards.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('shard_id', 'attempt', name='uq_shard_attempts_shard_attempt')
    )
    with op.batch_alter_table('shard_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shard_attempts_activity_run_id'), ['activity_run_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('shard_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shard_attempts_activity_run_id'))
    op.drop_table('shard_attempts')
