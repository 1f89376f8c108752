"""The cloud's HTTP layer: FastAPI app, routers, auth and error mapping."""

from __future__ import annotations

from dmg.cloud.api.app import create_app

__all__ = ["create_app"]
