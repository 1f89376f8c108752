"""run and activity-run counters (dmg.cloud.service.counters), filled from the rows
already there

Revision ID: 0014_run_counters
Revises: 0013_node_history
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_run_counters'
down_revision = '0013_node_history'
branch_labels = None
depends_on = None

_RUN = ('activities_total', 'activities_queued', 'activities_in_progress', 'activities_succeeded',
        'activities_failed', 'activities_cancelled')
_ACTIVITY = ('shards_total', 'shards_succeeded', 'shards_failed')
_SHARDS = 'FROM shards s WHERE s.activity_run_id = activity_runs.id'
_ACTIVITIES = 'FROM activity_runs a WHERE a.run_id = runs.id'


def upgrade() -> None:
    with op.batch_alter_table('activity_runs') as batch:
        for name in _ACTIVITY:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('first_failed_index', sa.Integer(), nullable=True))
        for name in ('files_done', 'bytes_done'):
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default='0'))
    with op.batch_alter_table('runs') as batch:
        for name in _RUN:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default='0'))
        for name in ('files_done', 'bytes_done'):
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default='0'))
    op.execute(
        f"UPDATE activity_runs SET shards_total = (SELECT count(*) {_SHARDS}), "
        f"shards_succeeded = (SELECT count(*) {_SHARDS} AND s.status = 'succeeded'), "
        f"shards_failed = (SELECT count(*) {_SHARDS} AND s.status = 'failed'), "
        f"first_failed_index = (SELECT min(s.\"index\") {_SHARDS} AND s.status = 'failed'), "
        f"files_done = (SELECT coalesce(sum(s.files), 0) {_SHARDS}), "
        f"bytes_done = (SELECT coalesce(sum(s.bytes), 0) {_SHARDS})")
    op.execute(
        f"UPDATE runs SET activities_total = (SELECT count(*) {_ACTIVITIES}), "
        f"activities_queued = (SELECT count(*) {_ACTIVITIES} AND a.status = 'Queued'), "
        f"activities_in_progress = (SELECT count(*) {_ACTIVITIES} AND a.status = 'InProgress'), "
        f"activities_succeeded = (SELECT count(*) {_ACTIVITIES} AND a.status = 'Succeeded'), "
        f"activities_failed = (SELECT count(*) {_ACTIVITIES} AND a.status = 'Failed'), "
        f"activities_cancelled = (SELECT count(*) {_ACTIVITIES} AND a.status = 'Cancelled'), "
        f"files_done = (SELECT coalesce(sum(a.files_done), 0) {_ACTIVITIES}), "
        f"bytes_done = (SELECT coalesce(sum(a.bytes_done), 0) {_ACTIVITIES})")


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        for name in (*_RUN, 'files_done', 'bytes_done'):
            batch.drop_column(name)
    with op.batch_alter_table('activity_runs') as batch:
        for name in (*_ACTIVITY, 'first_failed_index', 'files_done', 'bytes_done'):
            batch.drop_column(name)
