"""The OpenAPI document says what the cloud really answers, errors included.

Every operation lists the error statuses any route may give (:data:`ERRORS`, all in
the ``{error, message, hint}`` shape of :mod:`.errors`), and loses FastAPI's default
422, which the cloud never sends (a body that does not fit is a 400). Each operation
also names its scope (``x-dmg-scope``, :mod:`.auth`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from dmg.cloud.api.auth import check_scopes

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "message", "hint"],
    "properties": {
        "error": {"type": "string", "description": "bad_input, unauthorized, permission_denied, not_found, "
                                                   "conflict, stale_attempt, cancelled, retryable, fatal"},
        "message": {"type": "string", "description": "one line, safe to show"},
        "hint": {"type": "string", "description": "how to fix it (may be empty)"},
    },
}

#: Statuses every route may answer, in the error shape.
ERRORS: dict[str, str] = {
    "400": "bad input: the field is named",
    "401": "no token, or a token nobody owns",
    "403": "a token of the wrong kind, or work that is not the caller's",
    "404": "absent, or not the caller's to see",
    "405": "method not allowed",
    "409": "conflict, stale attempt, cancelled",
    "413": "request body over its limit",
    "500": "internal error (no detail)",
    "503": "retry later (database away, dispatcher lease held)",
}


def _with_errors(document: dict[str, Any], scopes: dict[str, str]) -> dict[str, Any]:
    document.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            operation["x-dmg-scope"] = scopes[f"{method.upper()} {path}"]
            responses = operation["responses"]
            responses.pop("422", None)
            for status, description in ERRORS.items():
                responses.setdefault(status, {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                })
    schemas = document["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install_openapi(app: FastAPI) -> None:
    """Check every route's scope (RuntimeError for a route without one) and make
    ``app.openapi()`` return the document with error responses and scopes (built once)."""
    scopes = check_scopes(app.routes)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_errors(build(), scopes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
