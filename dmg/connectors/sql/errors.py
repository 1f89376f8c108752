"""Translate SQLAlchemy and DB-API errors into :mod:`dmg.errors` (the SQL store's boundary).

PostgreSQL errors are classified by SQLSTATE; SQLite, which has none, by its
message. A message never carries the statement's parameters (row data).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from dmg.errors import BadInput, Conflict, DmgError, Fatal, NotFound, PermissionDenied, Retryable

# SQLSTATE prefix -> our error class, most specific first.
_BY_SQLSTATE: tuple[tuple[str, type[DmgError]], ...] = (
    ("42P01", NotFound),          # undefined_table
    ("3D000", NotFound),          # invalid_catalog_name: no such database
    ("3F000", NotFound),          # invalid_schema_name
    ("42501", PermissionDenied),  # insufficient_privilege
    ("28", PermissionDenied),     # invalid authorization: wrong user or password
    ("08", Retryable),            # connection exception
    ("40", Retryable),            # serialization failure, deadlock
    ("53", Retryable),            # insufficient resources: disk, memory, connections
    ("55P03", Retryable),         # lock_not_available
    ("57", Retryable),            # operator intervention: shutdown, statement timeout
    ("22", BadInput),             # data exception: a value the column cannot hold
    ("23", Conflict),             # integrity constraint violation
)

# SQLite and driver messages (lower case) -> our error class.
_BY_MESSAGE: tuple[tuple[str, type[DmgError]], ...] = (
    ("no such table", NotFound),
    ("role \"", PermissionDenied),  # role "x" does not exist
    ("unable to open database", NotFound),
    ("does not exist", NotFound),
    ("password authentication failed", PermissionDenied),
    ("authentication failed", PermissionDenied),
    ("readonly database", PermissionDenied),
    ("permission denied", PermissionDenied),
    ("database is locked", Retryable),
    ("database is busy", Retryable),
    ("disk i/o error", Retryable),
    ("connection refused", Retryable),
    ("could not connect", Retryable),
    ("connection failed", Retryable),
    ("timeout expired", Retryable),
    ("server closed the connection", Retryable),
)

_HINTS: dict[type[DmgError], str] = {
    NotFound: "check the table, query or database name in the store definition",
    PermissionDenied: "check the store's database user, its password credential and its grants",
    Retryable: "the database is unreachable or busy; dmg retries",
}


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


def classify(error: sa_exc.DBAPIError) -> type[DmgError]:
    """The :mod:`dmg.errors` class for a DB-API error."""
    if error.connection_invalidated:
        return Retryable
    sqlstate = str(getattr(error.orig, "sqlstate", "") or getattr(error.orig, "pgcode", "") or "")
    if sqlstate:
        for prefix, cls in _BY_SQLSTATE:
            if sqlstate.startswith(prefix):
                return cls
    message = str(error.orig).lower()
    for needle, cls in _BY_MESSAGE:
        if needle in message:
            return cls
    if isinstance(error, sa_exc.IntegrityError):
        return Conflict
    if isinstance(error, sa_exc.DataError):
        return BadInput
    return Fatal


@contextmanager
def map_sql_errors(what: str) -> Iterator[None]:
    """Raise :mod:`dmg.errors` in place of SQLAlchemy errors, with ``what`` leading the message."""
    try:
        yield
    except DmgError:
        raise
    except sa_exc.NoSuchTableError as error:
        raise NotFound(f"{what}: table {error} does not exist", hint=_HINTS[NotFound]) from None
    except sa_exc.DBAPIError as error:
        cls = classify(error)
        # ``from None``: the chained error's text holds the statement and its parameters.
        raise cls(f"{what}: {_first_line(str(error.orig))}", hint=_HINTS.get(cls, "")) from None
    except sa_exc.TimeoutError:
        raise Retryable(f"{what}: no free database connection in time", hint=_HINTS[Retryable]) from None
    except sa_exc.SQLAlchemyError as error:
        raise Fatal(f"{what}: {type(error).__name__}: {_first_line(str(error))}") from None
