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

Connectors translate SDK errors (botocore, azure-core, SQLAlchemy, OSError) into
this tree at their boundary; nothing above a connector sees an SDK exception.
"""

from __future__ import annotations

from typing import Any, ClassVar


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


_BY_CODE: dict[str, type[DmgError]] = {
    cls.code: cls
    for cls in (BadInput, Unauthorized, PermissionDenied, NotFound, Conflict, StaleAttempt,
                Cancelled, Retryable, Fatal)
}


def from_json(body: dict[str, Any], *, default: type[DmgError] = Fatal) -> DmgError:
    """Rebuild an error sent by :meth:`DmgError.to_json` (used by the cloud client)."""
    cls = _BY_CODE.get(str(body.get("error", "")), default)
    return cls(str(body.get("message", "unknown error")), hint=str(body.get("hint", "")))
