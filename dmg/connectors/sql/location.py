"""Database URLs for the ``sql`` store: never a password in the store definition."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dmg.errors import BadInput

_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def database_url(location: str, *, store: str, credential: Mapping[str, str] | None = None) -> URL:
    """The SQLAlchemy URL for ``location`` plus the site's ``credential`` (``username``/``password``).

    Raises ``BadInput`` for an unparsable URL or one that holds a password (the
    message never repeats the URL, which may hold it).
    """
    try:
        url = make_url(location)
    except ArgumentError:
        raise BadInput(f"store {store!r}: the location is not a database URL",
                       hint="write it like postgresql://user@host:5432/db or sqlite:////path/to.db") from None
    if url.password is not None:
        raise BadInput(f"store {store!r}: the database URL contains a password",
                       hint="remove the password from the location and set it as the store's credential")
    url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
    if credential:
        if credential.get("username") and not url.username:
            url = url.set(username=credential["username"])
        if credential.get("password"):
            url = url.set(password=credential["password"])
    return url
