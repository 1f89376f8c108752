"""Ended runs older than ``DMG_CLOUD_RUN_RETENTION`` are deleted with everything below
them; runs still going, and runs within the retention, stay."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from dmg.cloud.db import Database
from dmg.cloud.models import ActivityRun, Run, Shard, ShardAttempt
from dmg.cloud.service.runretention import prune_runs
from dmg.errors import NotFound
from tests.cloud.conftest import Cloud
from tests.cloud.test_attempts import failover, start_one_shard


def counts(db: Database) -> tuple[int, int, int, int]:
    with db.read() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) or 0  # type: ignore[return-value]
                     for t in (Run, ActivityRun, Shard, ShardAttempt))


def test_an_ended_run_past_the_retention_goes_with_its_rows(start_cloud: Callable[..., Cloud]) -> None:
    cloud = start_cloud()  # its own database: a prune here must not touch other tests' runs
    user = cloud.user()
    site, ended, shard_id = start_one_shard(cloud, user)
    failover(cloud, site, shard_id)  # two attempts, the second succeeds: the run ends
    assert user.run(ended)["status"] == "Succeeded"
    going = user.run_pipeline(user.list_pipelines()[0]["name"])["id"]  # queued, never ends
    db = Database(cloud.db_url)
    try:
        assert counts(db) == (2, 2, 1, 2)
        with db.write() as session:  # within the retention, or retention 0: nothing goes
            assert prune_runs(session, now=time.time(), retention=3600) == 0
            assert prune_runs(session, now=time.time() + 10 * 86400, retention=0) == 0
        with db.write() as session:
            assert prune_runs(session, now=time.time() + 7200, retention=3600) == 1
        assert counts(db) == (1, 1, 0, 0)
    finally:
        db.dispose()
    with pytest.raises(NotFound):
        user.run(ended)
    assert user.run(going)["status"] == "Queued"
