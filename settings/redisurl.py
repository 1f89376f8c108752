"""The site broker's address: one Redis server, or a Redis Sentinel group.

``DMG_REDIS_URL`` is either

- ``redis://[[user]:password@]host:port/db`` (also ``rediss://``, ``unix://``): one server;
- ``sentinel://[[user]:password@]h1:p1;sentinel://h2:p2;.../db``: the sentinels of a
  group, separated by ``;``, with ``DMG_REDIS_MASTER_NAME`` (default ``mymaster``)
  naming the primary they monitor. The database number and the password may be
  written on any one of them; they apply to the group's primary (the sentinels
  themselves are reached without a password).

:func:`parse_redis_url` reads either form; :meth:`BrokerAddress.canonical_url`
writes a Sentinel group the way kombu's ``sentinel://`` transport and Celery's
``SentinelBackend`` both read it (database and password on every entry: each of
them takes them from a different entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from settings import SettingsError

__all__ = ["BrokerAddress", "parse_redis_url"]

SENTINEL = "sentinel"
DEFAULT_SENTINEL_PORT = 26379
PLAIN_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class BrokerAddress:
    """Where the site broker is. ``sentinels`` is empty for a plain Redis URL."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def canonical_url(self) -> str:
        """The URL for Celery (broker and result backend): unchanged for a plain Redis
        URL; for a Sentinel group, every entry with the database and credentials."""
        if not self.is_sentinel:
            return self.url
        auth = ""
        if self.password is not None or self.username:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        return ";".join(f"{SENTINEL}://{auth}{_host(h)}:{p}/{self.db}" for h, p in self.sentinels)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_redis_url(url: str) -> BrokerAddress:
    """Read ``DMG_REDIS_URL``; raises :class:`settings.SettingsError` naming what is wrong."""
    text = url.strip()
    if not text:
        raise SettingsError("DMG_REDIS_URL is empty; set it to redis://host:port/db "
                            "or sentinel://host:port;sentinel://host:port/db")
    scheme = text.split(":", 1)[0].lower()
    if scheme in PLAIN_SCHEMES:
        return BrokerAddress(url=text)
    if scheme != SENTINEL:
        raise SettingsError(f"DMG_REDIS_URL={_safe(text)} has scheme {scheme!r}; use redis://, "
                            "rediss://, unix:// or sentinel://host:port;sentinel://host:port/db")
    sentinels: list[tuple[str, int]] = []
    db: int | None = None
    username: str | None = None
    password: str | None = None
    for chunk in (c.strip() for c in text.split(";")):
        if not chunk:
            continue
        try:
            parts = urlsplit(chunk)
            port = parts.port or DEFAULT_SENTINEL_PORT
        except ValueError as exc:
            raise SettingsError(f"DMG_REDIS_URL entry {_safe(chunk)} is not a URL: {exc}") from None
        if parts.scheme.lower() != SENTINEL or not parts.hostname:
            raise SettingsError(f"DMG_REDIS_URL entry {_safe(chunk)} is not sentinel://host:port; "
                                "separate the sentinels of a group with ';'")
        sentinels.append((parts.hostname, port))
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise SettingsError(f"DMG_REDIS_URL entry {_safe(chunk)}: the database {path!r} "
                                    "is not a number")
            db = int(path)
        if parts.password is not None:
            password = parts.password
        if parts.username:
            username = parts.username
    if not sentinels:
        raise SettingsError("DMG_REDIS_URL names no sentinel; use sentinel://host:port;sentinel://host:port/db")
    return BrokerAddress(url=text, sentinels=tuple(sentinels), db=db or 0, username=username,
                         password=password)


def display_url(url: str) -> str:
    """``DMG_REDIS_URL`` as messages may show it: every password replaced by ``***``."""
    return ";".join(_safe(chunk) for chunk in url.strip().split(";"))


def _safe(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    except ValueError:
        return "<unparsable URL>"
