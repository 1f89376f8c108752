"""How every Redis client of dmg reaches the site broker: its password and TLS.

One function per question, used by the two client factories (dmg's own,
:func:`dmg.site.connection.redis_client`, and Celery's, :func:`settings.celery.celery_config`,
which Flower uses too), so that no client is built without them:

- :func:`broker_password`: ``DMG_REDIS_PASSWORD``; else the password written in
  ``DMG_REDIS_URL``; else the one ``dmg up`` generated once into ``<data dir>/redis-password``
  (mode 0600); else none. It is handed to clients in memory, never on a command line.
- :func:`broker_tls`: TLS is on when ``DMG_REDIS_URL`` is ``rediss://`` or any of
  ``DMG_REDIS_TLS_CA`` / ``DMG_REDIS_TLS_CERT`` / ``DMG_REDIS_TLS_KEY`` is set. The server's
  certificate is always checked, against ``DMG_REDIS_TLS_CA`` (else the system's CA store)
  and against the host name of the URL (wildcard names match as TLS says they do). A
  client certificate and key are sent when the server asks for one (``tls-auth-clients``).
- :func:`client_url`: the URL a client connects to: ``rediss://`` when TLS is on, with the
  password of :func:`broker_password` in it (for Celery, whose URL is parsed in memory).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from settings import Settings, SettingsError

__all__ = ["BrokerTLS", "broker_password", "broker_tls", "client_url", "password_file"]


def password_file(settings: Settings) -> Path:
    """Where ``dmg up`` keeps the password of the Redis it runs (mode 0600)."""
    return settings.data_dir / "redis-password"


def broker_password(settings: Settings) -> str | None:
    """The site broker's password, or None (see the module docstring)."""
    if settings.redis_password:
        return settings.redis_password
    if _url_password(settings.redis_url) is not None:
        return None  # the URL carries it
    try:
        return password_file(settings).read_text().strip() or None
    except OSError:
        return None


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url.split(";", 1)[0].strip()).password
    except ValueError:
        return None


@dataclass(frozen=True)
class BrokerTLS:
    """TLS options of a client of the site broker; paths are checked to exist."""

    ca: str = ""
    cert: str = ""
    key: str = ""

    def redis_py(self) -> dict[str, Any]:
        """redis-py's connection keywords (also what kombu's ``broker_use_ssl`` and
        Celery's ``redis_backend_use_ssl`` take)."""
        options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
        if self.ca:
            options["ssl_ca_certs"] = self.ca
        if self.cert:
            options["ssl_certfile"] = self.cert
            options["ssl_keyfile"] = self.key
        return options

    def describe(self) -> str:
        """Where the trusted CAs come from, for messages."""
        return f"DMG_REDIS_TLS_CA={self.ca}" if self.ca else "the system's CA store"


def _existing(name: str, value: str) -> str:
    if value and not Path(value).expanduser().is_file():
        raise SettingsError(f"DMG_{name.upper()}={value} does not exist; give the path of a PEM file")
    return str(Path(value).expanduser()) if value else ""


def broker_tls(settings: Settings) -> BrokerTLS | None:
    """The TLS options, or None when the broker is reached in plain text. Raises
    :class:`settings.SettingsError` for a file that does not exist or a certificate
    without its key."""
    scheme = settings.redis_url.strip().split(":", 1)[0].lower()
    wanted = scheme == "rediss" or any((settings.redis_tls_ca, settings.redis_tls_cert,
                                        settings.redis_tls_key))
    if not wanted:
        return None
    if scheme == "unix":
        raise SettingsError("DMG_REDIS_TLS_* is set but DMG_REDIS_URL is a unix socket; "
                            "use rediss://host:port/db")
    if bool(settings.redis_tls_cert) != bool(settings.redis_tls_key):
        raise SettingsError("DMG_REDIS_TLS_CERT and DMG_REDIS_TLS_KEY go together; set both or neither")
    return BrokerTLS(ca=_existing("redis_tls_ca", settings.redis_tls_ca),
                     cert=_existing("redis_tls_cert", settings.redis_tls_cert),
                     key=_existing("redis_tls_key", settings.redis_tls_key))


def encryption_mode(settings: Settings) -> str:
    """This process's encryption mode toward the site broker: ``tls`` or ``none`` (what a
    node reports in its heartbeat; the cloud compares it with the gateway's)."""
    try:
        return "tls" if broker_tls(settings) is not None else "none"
    except SettingsError:
        return "tls"


def client_url(url: str, *, tls: bool, password: str | None) -> str:
    """``url`` (one ``redis://`` entry) as a client uses it: ``rediss://`` when ``tls``, with
    ``password`` when the URL has none. Sentinel entries keep their scheme."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    if tls and scheme.lower() == "redis":
        scheme = "rediss"
    if password and scheme.lower() in ("redis", "rediss", "sentinel") and _url_password(text) is None:
        user, at, host = rest.rpartition("@")
        rest = f"{user}:{quote(password, safe='')}@{host}" if at else f":{quote(password, safe='')}@{rest}"
    return f"{scheme}://{rest}"
