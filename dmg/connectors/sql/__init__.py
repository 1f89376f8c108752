"""The ``sql`` store: tables and named queries of one database, through SQLAlchemy.

Location: a database URL without a password (``postgresql://user@host/db``,
``sqlite:////path/to.db``); the password comes from the site's credential
(``credential={"password": ...}`` at construction). A URL holding a password is
refused with ``BadInput``. ``postgresql://`` uses the psycopg 3 driver.

Paths (:mod:`.paths`): a table, ``query:<name>`` from ``options.queries``, or a
key range ``table?key>=a&key<b``. Options: ``format`` (``csv``, the default, or
``jsonl``), ``queries``, ``schema``, ``shard_key`` + ``rows_per_shard`` (list
one entry per key range of about that many rows), ``batch_size`` (rows per
fetch and per insert, default 1000), ``create_table`` (create a missing target
table from the data's columns), ``connect_timeout`` (seconds).

Reads stream the rows with a server-side cursor; entries have size ``-1``
(unknown until read). Writes are staged and committed in ONE transaction with a
marker row in ``dmg_commits``, so replaying a commit is a no-op
(:mod:`.writer`). Errors are mapped in :func:`.errors.map_sql_errors`.
"""

from __future__ import annotations

from dmg.connectors.sql.connector import UNKNOWN_SIZE, SqlConnector
from dmg.connectors.sql.errors import map_sql_errors
from dmg.connectors.sql.writer import MARKER_TABLE

__all__ = ["MARKER_TABLE", "UNKNOWN_SIZE", "SqlConnector", "map_sql_errors"]
