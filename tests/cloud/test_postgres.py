"""The same rules with the cloud on PostgreSQL (a real server from initdb + pg_ctl)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dmg.cloud.db import Database
from tests.cloud import test_counters, test_dispatch, test_gateways, test_prometheus
from tests.cloud.conftest import Cloud, launch
from tests.servers.postgres import PostgresServer


@pytest.fixture(scope="module")
def pg_cloud(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    server = launch(tmp_path_factory.mktemp("pg-cloud"), db=postgres_url)
    try:
        yield server
    finally:
        server.stop()


def test_health_reports_postgresql(pg_cloud: Cloud) -> None:
    assert httpx.get(pg_cloud.url + "/api/v1/health").json()["database"] == "postgresql"


def test_migrations_are_idempotent_and_match_the_models(postgres_url: str, pg_cloud: Cloud) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from dmg.cloud.models import Base

    db = Database(postgres_url)
    try:
        db.migrate()  # already at head: nothing to do
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        db.dispose()


def test_registration_rules_on_postgres(pg_cloud: Cloud) -> None:
    with pg_cloud.user() as user:
        test_gateways.test_node_cap_and_nothing_half_registered(user)
        test_gateways.test_regenerating_a_key_revokes_it_and_keeps_nodes(pg_cloud, user)


def test_concurrent_claims_on_postgres(pg_cloud: Cloud) -> None:
    with pg_cloud.user() as user:
        test_dispatch.test_two_concurrent_claimers_never_share_an_activity_run(pg_cloud, user)


def test_epochs_and_shards_on_postgres(pg_cloud: Cloud) -> None:
    with pg_cloud.user() as user:
        test_dispatch.test_older_epochs_are_fenced(pg_cloud, user)
        test_dispatch.test_shards_drive_activity_and_run_status(pg_cloud, user)
        test_dispatch.test_attempts_fence_older_reports(pg_cloud, user)


def test_counters_on_postgres(pg_cloud: Cloud) -> None:
    with pg_cloud.user() as user:
        test_counters.test_counters_equal_the_aggregates_after_failures_retries_and_a_cancel(pg_cloud, user)
        test_counters.test_claims_in_parts_and_a_take_back_keep_the_counters_and_the_run_s_first_start(
            pg_cloud, user)


def test_bad_values_are_400_on_postgres(pg_cloud: Cloud) -> None:
    headers = {"Authorization": f"Bearer {pg_cloud.process.api_token}"}
    response = httpx.post(pg_cloud.url + "/api/v1/stores", headers=headers,
                          json={"name": "nul", "type": "file", "location": "a\x00b"})
    assert response.status_code == 400



def test_metrics_on_postgres(pg_cloud: Cloud) -> None:
    test_prometheus.test_the_figures_follow_a_run(pg_cloud)


def test_metrics_while_the_database_is_gone(postgres_server: PostgresServer, tmp_path: Path) -> None:
    """Given a cloud whose database is dropped under it, a scrape is a 503 JSON error
    (Prometheus marks the target down), never a traceback; the cloud keeps serving."""
    import psycopg

    url = postgres_server.create_database("dmg_gone_metrics")
    server = launch(tmp_path / "gone", db=url)
    try:
        headers = {"Authorization": f"Bearer {server.process.api_token}"}
        assert httpx.get(server.url + "/metrics", headers=headers, timeout=30).status_code == 200
        with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as conn:
            conn.execute('DROP DATABASE "dmg_gone_metrics" WITH (FORCE)')
        response = httpx.get(server.url + "/metrics", headers=headers, timeout=30)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "retryable" and "Traceback" not in response.text
        assert httpx.get(server.url + "/api/v1/health", timeout=30).status_code == 200
    finally:
        server.stop()
