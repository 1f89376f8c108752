"""dmg's exception tree. Every error a user can see is one of these.

::

    DmgError                    a one-line message; ``hint`` says how to fix it
    ├── BadInput                malformed request, file or argument       (400)
    │   └── TooLarge            a request or definition over its size limit (413)
    ├── Unauthorized            missing, wrong or revoked key or token    (401)
    ├── PermissionDenied        the store or the cloud refused access      (403)
    ├── NotFound                a gateway, node, store, path ... is absent (404)
    ├── Conflict                a name already taken, a state forbidding it (409)
    ├── StaleAttempt            this attempt was fenced off by a newer one (409)
    ├── Cancelled               a user cancelled the run this work belongs to (409)
    ├── Retryable               transient: throttled, unreachable, timed out (503)
    └── Fatal                   anything else that retrying will not fix   (500)

    BrokerError                 the site's Redis failed a command (:mod:`dmg.site.boundary`)
    ├── BrokerUnreachable       it cannot be reached: refused, timed out, loading, auth
    └── BrokerRefused           it answered with an error (ACL, read-only replica, OOM)

Connectors translate SDK errors (botocore, azure-core, SQLAlchemy, OSError) into
this tree at their boundary; nothing above a connector sees an SDK exception. The
site's Redis clients (:func:`dmg.site.connection.redis_client`) translate redis-py's
errors into :class:`BrokerError`: nothing outside :mod:`dmg.site` catches a redis one.

:class:`BrokerError` is not a :class:`DmgError`, on purpose: it replaced
redis-py's error class, which no ``except DmgError``/``except Retryable`` caught, and
handlers of those wrap Redis calls (the engine's per-file retry around the fencing
check, the runners' failure reports). Making it a ``Retryable`` changes what each of
those does when the broker is away; that is a decision per handler, not a rename.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit


def safe_url(url: str) -> str:
    """``url`` safe to show in an error or a status: its user and password replaced by a
    short hash of the whole URL (``http://***@host:3128#a1b2c3d4``), so two URLs that differ
    only in their credentials still show different; "" shows as ``none``."""
    if not url:
        return "none"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return f"<unparsable URL #{_short_hash(url)}>"
    if parts.username is None and parts.password is None:
        return url
    netloc = f"***@{host}" + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + f"#{_short_hash(url)}"


def _short_hash(value: str) -> str:
    import hashlib  # rarely needed: every short CLI command imports this module

    return hashlib.sha256(value.encode()).hexdigest()[:8]

class DmgError(Exception):
    """Base class: ``str(err)`` is a one-line message safe to show a user."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "hint": self.hint}


class BadInput(DmgError):
    http_status = 400
    code = "bad_input"


class TooLarge(BadInput):
    http_status = 413


class Unauthorized(DmgError):
    http_status = 401
    code = "unauthorized"


class PermissionDenied(DmgError):
    http_status = 403
    code = "permission_denied"


class NotFound(DmgError):
    http_status = 404
    code = "not_found"


class Conflict(DmgError):
    http_status = 409
    code = "conflict"


class StaleAttempt(Conflict):
    code = "stale_attempt"


class Cancelled(Conflict):
    code = "cancelled"


class Retryable(DmgError):
    http_status = 503
    code = "retryable"


class Fatal(DmgError):
    http_status = 500
    code = "fatal"


class BrokerError(Exception):
    """The site's Redis failed a command; ``str(err)`` is one line naming the failure.
    The redis-py error is ``__cause__``. Never a password: redis-py's messages name the
    host and port only."""


class BrokerUnreachable(BrokerError):
    """The site's Redis cannot be reached (refused, timed out, still loading, bad login)."""


class BrokerCertificateRefused(BrokerUnreachable):
    """TLS to the site's Redis failed on its certificate: a wrong CA or a wrong host name
    (``str(err)`` says which). Retrying does not help; the settings must change."""


class BrokerRefused(BrokerError):
    """The site's Redis answered a command with an error (ACL, read-only replica, OOM...)."""


_BY_CODE: dict[str, type[DmgError]] = {
    cls.code: cls
    for cls in (BadInput, Unauthorized, PermissionDenied, NotFound, Conflict, StaleAttempt,
                Cancelled, Retryable, Fatal)
}


def from_json(body: dict[str, Any], *, default: type[DmgError] = Fatal) -> DmgError:
    """Rebuild an error sent by :meth:`DmgError.to_json` (used by the cloud client)."""
    cls = _BY_CODE.get(str(body.get("error", "")), default)
    return cls(str(body.get("message", "unknown error")), hint=str(body.get("hint", "")))
