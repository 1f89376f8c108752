"""file results: the per-file report of activity runs

Revision ID: 0002_file_results
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002_file_results'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('file_results',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('activity_run_id', sa.String(length=64), nullable=False),
    sa.Column('shard_id', sa.String(length=128), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('path_hash', sa.String(length=64), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('verified', sa.String(length=64), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('tries', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.Column('recorded_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['activity_run_id'], ['activity_runs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['shard_id'], ['shards.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('shard_id', 'path_hash', name='uq_file_results_shard_path')
    )
    with op.batch_alter_table('file_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_file_results_activity_run_id'), ['activity_run_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('file_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_file_results_activity_run_id'))
    op.drop_table('file_results')
