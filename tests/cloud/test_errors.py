"""Unexpected failures answer 500 JSON without internals, and are logged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from dmg.cloud.api import create_app
from dmg.procs import free_port
from settings import Settings
from tests.waiting import wait_for


@pytest.fixture
def failing_app_url(tmp_path: Path) -> Iterator[str]:
    app: FastAPI = create_app(Settings(data_dir=tmp_path, log_level="WARNING"))

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("internal detail: password=hunter2")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    def started() -> bool:
        assert thread.is_alive(), "server did not start"
        return bool(server.started)

    wait_for(started, timeout=20, interval=0.02, what="the server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_unexpected_errors_are_500_json_without_internals(
        failing_app_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="dmg.cloud.api.errors"):
        response = httpx.get(failing_app_url + "/api/v1/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "fatal" and "hunter2" not in response.text
    assert any("unexpected error on GET /api/v1/boom" in r.getMessage() for r in caplog.records)
