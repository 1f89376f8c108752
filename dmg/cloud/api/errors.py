"""Every error leaves the cloud as JSON ``{error, message, hint}``.

- :class:`dmg.errors.DmgError` -> its ``http_status`` and ``to_json()``.
- Request validation errors and malformed JSON -> 400 ``bad_input`` naming the field.
- A body over its size limit -> 413 ``bad_input`` (:mod:`.guard`, before it is read).
- Unknown paths and methods -> 404 / 405 in the same shape.
- A database that cannot be reached -> 503 ``retryable``.
- Anything else -> 500 ``fatal`` without internals (the traceback goes to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dmg.errors import BadInput, DmgError, Fatal, NotFound, Retryable, Unauthorized

log = logging.getLogger(__name__)


def error_response(err: DmgError, *, status: int | None = None) -> JSONResponse:
    return JSONResponse(err.to_json(), status_code=status or err.http_status)


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text


def validation_message(errors: Sequence[Any]) -> tuple[str, str]:
    """(message, hint) for the first pydantic error, naming the field."""
    if not errors:
        return "the request is not valid", ""
    first = errors[0]
    kind = str(first.get("type", ""))
    field = _field(first.get("loc", ()))
    if kind == "json_invalid":
        return "the request body is not valid JSON", "send a JSON object with Content-Type: application/json"
    if kind == "missing":
        if not field:
            return "the request needs a JSON body", "send a JSON object"
        return f"field {field!r} is missing", "add it to the request"
    if kind in ("model_attributes_type", "dict_type") and not field:
        return "the request body must be a JSON object", ""
    detail = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    return (f"field {field!r}: {detail}" if field else detail), ""


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DmgError)
    async def _dmg_error(_request: Request, exc: DmgError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, hint = validation_message(exc.errors())
        return error_response(BadInput(message, hint=hint))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        err: DmgError
        if exc.status_code == 404:
            err = NotFound("no such path in the cloud API", hint="see /openapi.json")
        elif exc.status_code == 401:
            err = Unauthorized(detail)
        elif exc.status_code < 500:
            err = BadInput(detail or "the request is not valid")
        else:
            err = Fatal(detail)
        return JSONResponse(err.to_json(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
        return error_response(Retryable("the cloud database cannot be reached",
                                        hint="check the database server and the cloud's DMG_CLOUD_DB"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(Fatal("the cloud hit an internal error", hint="see the cloud's log"))
