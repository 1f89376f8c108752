"""file_results keyed by (shard_id, path_key): the path itself, or a long one's prefix
and sha256 (dmg.cloud.service.files.path_key), in place of the path's sha256 alone, so
that a shard's rows, which arrive in path order, go into the unique index in that order

Revision ID: 0015_file_result_key
Revises: 0014_run_counters
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = '0015_file_result_key'
down_revision = '0014_run_counters'
branch_labels = None
depends_on = None

# dmg.cloud.service.files.KEY_PATH_CHARS, as it was when this migration was written.
_KEY_PATH_CHARS = 256


def upgrade() -> None:
    # SQLite: the table is copied (its column type changes); PostgreSQL: varchar -> text in place.
    with op.batch_alter_table('file_results') as batch:
        batch.alter_column('path_hash', new_column_name='path_key', type_=sa.Text(),
                           existing_type=sa.String(length=64), existing_nullable=False)
    # A long path's key keeps the sha256 stored so far: both sides of || are already there.
    op.execute(f"UPDATE file_results SET path_key = CASE WHEN length(path) <= {_KEY_PATH_CHARS} THEN path "
               f"ELSE substr(path, 1, {_KEY_PATH_CHARS}) || ':' || path_key END")


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, path FROM file_results")).all()
    for row_id, path in rows:
        connection.execute(sa.text("UPDATE file_results SET path_key = :digest WHERE id = :id"),
                           {"digest": hashlib.sha256(path.encode('utf-8', 'surrogatepass')).hexdigest(),
                            "id": row_id})
    with op.batch_alter_table('file_results') as batch:
        batch.alter_column('path_key', new_column_name='path_hash', type_=sa.String(length=64),
                           existing_type=sa.Text(), existing_nullable=False)
