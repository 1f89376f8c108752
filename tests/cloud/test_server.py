"""The cloud process: start, health, OpenAPI, auth, token and key files."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from dmg.cloud.client import CloudClient
from dmg.cloud.db import Database
from dmg.cloud.keys import api_token
from dmg.cloud.server import parse_bind, start_cloud_subprocess
from dmg.errors import BadInput, Fatal, PermissionDenied, Unauthorized
from settings import Settings
from tests.cloud.conftest import Cloud


def test_health_answers_without_a_token(cloud: Cloud) -> None:
    response = httpx.get(cloud.url + "/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["database"] == "sqlite"


def test_openapi_lists_the_client_paths(cloud: Cloud) -> None:
    paths = httpx.get(cloud.url + "/openapi.json").json()["paths"]
    for path in ("/api/v1/gateways", "/api/v1/nodes/register", "/api/v1/dispatch/claim",
                 "/api/v1/shards/{shard_id}/report", "/api/v1/activity-runs/{activity_run_id}/shards"):
        assert path in paths


def test_user_routes_need_the_api_token(cloud: Cloud) -> None:
    with CloudClient(cloud.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.list_gateways()
    with CloudClient(cloud.url, token="not-the-token") as wrong, pytest.raises(Unauthorized):
        wrong.list_gateways()


def test_node_token_is_not_a_user_token(cloud: Cloud, user: CloudClient) -> None:
    gateway = user.create_gateway(f"gw-auth-{id(user)}")
    token = user.register_node(key=gateway["key1"], name="n1", version="1.0.0")["token"]
    with cloud.node(token) as node, pytest.raises(PermissionDenied):
        node.list_gateways()
    with cloud.user() as as_user, pytest.raises(PermissionDenied):
        as_user.heartbeat({"running": 0})


def test_token_and_secret_key_files_are_private(cloud: Cloud) -> None:
    directory = cloud.settings.data_dir / "cloud"
    for name in ("api-token", "secret.key", "cloud.db", "cloud.db-wal"):
        mode = stat.S_IMODE((directory / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert api_token(cloud.settings) == cloud.process.api_token


def test_an_sqlite_database_in_a_new_directory_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "cloud.db"
    Database(f"sqlite:///{path}").migrate()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_api_token_setting_wins_over_the_file(tmp_path: Path) -> None:
    assert api_token(Settings(data_dir=tmp_path, api_token="given")) == "given"
    assert not (tmp_path / "cloud" / "api-token").exists()
    generated = api_token(Settings(data_dir=tmp_path))
    assert generated and api_token(Settings(data_dir=tmp_path)) == generated


def test_starts_from_any_directory_and_migrates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = Settings(data_dir=tmp_path / "data", log_level="WARNING")
    cloud = start_cloud_subprocess(settings, bind="127.0.0.1:0")
    try:
        with CloudClient(cloud.url, token=cloud.api_token) as client:
            assert client.list_gateways() == []
        assert (tmp_path / "data" / "cloud" / "cloud.db").exists()
    finally:
        cloud.stop()
    assert cloud.proc.poll() is not None


def test_a_bad_database_url_fails_the_start_clearly(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, log_level="WARNING")
    with pytest.raises(Fatal) as failure:
        start_cloud_subprocess(settings, bind="127.0.0.1:0", db="mysql://nobody@127.0.0.1/x", timeout=30)
    assert "exited" in failure.value.message
    assert "SQLite or PostgreSQL" in failure.value.hint


def test_parse_bind() -> None:
    assert parse_bind("127.0.0.1:8050") == ("127.0.0.1", 8050)
    assert parse_bind("[::1]:80") == ("::1", 80)
    for bad in ("8050", "host:", ":80", "host:99999", "host:x"):
        with pytest.raises(BadInput):
            parse_bind(bad)


def test_sqlite_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from dmg.cloud.models import Base

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        db.migrate()
        db.migrate()
        with db.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        db.dispose()
