"""Who is calling: users (the API token) or nodes (their registration token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dmg.cloud.keys import token_matches
from dmg.cloud.service import CloudService, NodeIdentity
from dmg.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="users: the API token; nodes: their node token")

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def service(request: Request) -> CloudService:
    svc: CloudService = request.app.state.service
    return svc


def require_user(request: Request, credentials: Credentials) -> None:
    """Accept the API token (``Authorization: Bearer``); else Unauthorized."""
    given = credentials.credentials if credentials else ""
    if not token_matches(given, request.app.state.api_token):
        raise Unauthorized("this request needs the cloud's API token",
                           hint="send `Authorization: Bearer <token>`; `dmg cloud token` on the cloud's "
                                "machine prints it (DMG_API_TOKEN, else <data dir>/cloud/api-token)")


async def require_node(request: Request, credentials: Credentials) -> NodeIdentity:
    """The node owning the bearer token; else Unauthorized."""
    given = credentials.credentials if credentials else ""
    return await run_in_threadpool(service(request).authenticate_node, given)


Node = Annotated[NodeIdentity, Depends(require_node)]
Service = Annotated[CloudService, Depends(service)]
