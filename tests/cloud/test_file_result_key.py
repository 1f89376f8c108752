"""A file result's key (:func:`dmg.cloud.service.files.path_key`) and migration 0015, which
re-keys the rows of an existing database (SQLite and PostgreSQL) without losing or
doubling one: a path posted again after the upgrade replaces its row."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from dmg.cloud.db import MIGRATIONS, Database
from dmg.cloud.filerows import as_row
from dmg.cloud.service.files import KEY_PATH_CHARS, path_key
from tests.cloud.conftest import claimed_run, launch
from tests.servers.postgres import PostgresServer

SHORT = "d0/f0000001.bin"
LONG = "d/" + "x" * 400 + ".bin"
LONG_TWIN = "d/" + "x" * 400 + ".bim"  # the same first KEY_PATH_CHARS characters
WIDE = "ü/" + "€" * 1000  # 3 bytes a character


def test_a_key_is_the_path_or_its_prefix_and_hash_and_two_paths_never_share_one() -> None:
    assert path_key(SHORT) == SHORT and path_key("a" * KEY_PATH_CHARS) == "a" * KEY_PATH_CHARS
    long_key = path_key(LONG)
    assert long_key == LONG[:KEY_PATH_CHARS] + ":" + hashlib.sha256(LONG.encode()).hexdigest()
    assert path_key(LONG_TWIN) != long_key and len(long_key) > KEY_PATH_CHARS  # a short path is shorter
    assert len(path_key(WIDE).encode()) < 1400  # within PostgreSQL's index entry (2,704 bytes)
    keys = [path_key(f"d{i // 500}/f{i:07d}.bin") for i in range(2000)]
    assert keys == sorted(keys)  # rows in path order enter the index in that order


def _downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (as Database.migrate goes up)."""
    db = Database(url)
    try:
        with db.engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    yield server.create_database(f"rekey_{uuid.uuid4().hex[:12]}")


def test_the_rows_of_an_existing_database_are_re_keyed_and_a_path_posted_again_replaces_its_row(
        db_url: str, tmp_path: Path) -> None:
    # Given a database whose file results were recorded under the sha256 key (migration 0014)
    paths = [SHORT, LONG, LONG_TWIN, WIDE]
    cloud = launch(tmp_path / "before", db=db_url)
    try:
        site, run_id, [activity] = claimed_run(cloud)
        shard = f"{activity}-0"
        with cloud.node(site.tokens["d"]) as d, cloud.node(site.tokens["w"]) as w:
            d.report_batch([{"plan": {"activity_run_id": activity, "epoch": 1,
                                      "shards": [{"id": shard, "index": 0, "files": 4, "bytes": 4}]}},
                            {"shard_id": shard, "report": {"attempt": 1, "status": "placed", "node": "w",
                                                           "epoch": 1}}])
            w.report_files(shard, attempt=1, node="w",
                           files=[{"path": p, "bytes": 1, "status": "copied"} for p in paths])
    finally:
        cloud.stop()
    _downgrade(db_url, "0014_run_counters")
    engine = Database(db_url).engine
    try:
        with engine.connect() as connection:
            stored = dict(connection.execute(text("SELECT path, path_hash FROM file_results")).all())
        assert stored == {p: hashlib.sha256(p.encode()).hexdigest() for p in paths}
        # When the cloud starts again (migrating to head) and the same paths are posted again
        cloud = launch(tmp_path / "after", db=db_url)
        try:
            with cloud.node(site.tokens["w"]) as w, cloud.user() as user:
                rows = [as_row({"path": p, "bytes": 2, "status": "copied"}) for p in paths]
                w.request("POST", f"/shards/{shard}/files", json={"attempt": 1, "rows": rows})
                report = list(user.run_report(run_id))
        finally:
            cloud.stop()
        with engine.connect() as connection:
            keys = dict(connection.execute(text("SELECT path, path_key FROM file_results")).all())
    finally:
        engine.dispose()
    # Then each path has one row, replaced, under its new key
    assert sorted((r["path"], r["bytes"]) for r in report) == sorted((p, 2) for p in paths)
    assert keys == {p: path_key(p) for p in paths}
