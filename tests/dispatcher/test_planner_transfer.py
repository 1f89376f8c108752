"""Planning with the copy engine's options: filters drop files before sharding, the
sink is listed once for incremental hints, a bad option fails the activity run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dispatcher.planner import plan_activity_run
from dmg.connectors import Connector, Entry, StoreSpec, connector_for
from dmg.connectors.file import FileConnector
from dmg.errors import PermissionDenied
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.workers.support import file_store, write_files

SETTINGS = Settings(shard_max_files=10, shard_max_bytes=10_000_000)


def activity_run(tmp_path: Path, **options: Any) -> dict[str, Any]:
    return {"id": "ar1", "run_id": "r1", "name": "copy-in",
            "source": {"store": file_store("src", tmp_path / "src").to_json(), "path": "in"},
            "sink": {"store": file_store("dst", tmp_path / "dst").to_json(), "path": "out"},
            "options": options}


def entries(state: SiteState, shard_id: str = "ar1-00000") -> list[dict[str, Any]]:
    shard = state.shard(shard_id)
    assert shard is not None
    return list(shard["spec"]["entries"])


def test_filters_drop_files_before_they_are_cut_into_shards(tmp_path: Path, state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a.csv": 10, "b.log": 20, "tmp/c.csv": 30, "d/e.csv": 40})

    plan = plan_activity_run(activity_run(tmp_path, include=["*.csv"], exclude=["tmp/"]), state=state,
                             cloud=MemoryCloud(), epoch=1, settings=SETTINGS)

    assert plan.shards == [{"id": "ar1-00000", "index": 0, "files": 2, "bytes": 50}]
    assert [e["path"] for e in entries(state)] == ["in/a.csv", "in/d/e.csv"]


def test_the_sink_listing_becomes_a_hint_per_entry(tmp_path: Path, state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"same": 10, "new": 20})
    write_files(tmp_path / "dst" / "out", {"same": 10})
    os.utime(tmp_path / "dst/out/same", (1_000, 1_000))

    plan_activity_run(activity_run(tmp_path), state=state, cloud=MemoryCloud(), epoch=1, settings=SETTINGS)

    hints = {e["path"]: e["sink"] for e in entries(state)}
    assert hints["in/new"] is None
    assert hints["in/same"]["path"] == "out/same" and hints["in/same"]["size"] == 10
    assert hints["in/same"]["mtime"] == 1_000


def test_an_empty_or_missing_sink_hints_every_entry_absent(tmp_path: Path, state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a": 1, "d/b": 2})

    plan_activity_run(activity_run(tmp_path), state=state, cloud=MemoryCloud(), epoch=1, settings=SETTINGS)
    (tmp_path / "dst" / "out").mkdir(parents=True)
    plan_activity_run({**activity_run(tmp_path), "id": "ar2"}, state=state, cloud=MemoryCloud(), epoch=1,
                      settings=SETTINGS)

    for shard_id in ("ar1-00000", "ar2-00000"):  # no sink folder yet, then an empty one
        hints = [(e["path"], e["sink"]) for e in entries(state, shard_id)]
        assert hints == [("in/a", None), ("in/d/b", None)]


def test_overwrite_always_lists_no_sink(tmp_path: Path, state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a": 1})
    plan_activity_run(activity_run(tmp_path, overwrite="always"), state=state, cloud=MemoryCloud(), epoch=1,
                      settings=SETTINGS)
    assert "sink" not in entries(state)[0]


class UnlistableFiles(FileConnector):
    """A file store this node may write but not list (a write-only share)."""

    def list(self, prefix: str = "") -> Iterator[Entry]:
        raise PermissionDenied("no listing here")


def test_a_sink_that_cannot_be_listed_leaves_the_lookup_to_workers(tmp_path: Path, state: SiteState) -> None:
    write_files(tmp_path / "src" / "in", {"a": 1})

    def factory(spec: StoreSpec) -> Connector:
        return UnlistableFiles(spec) if spec.name == "dst" else connector_for(spec)

    plan = plan_activity_run(activity_run(tmp_path), state=state, cloud=MemoryCloud(), epoch=1,
                             settings=SETTINGS, connector_factory=factory)

    assert not plan.failed and "sink" not in entries(state)[0]


def test_a_bad_option_fails_the_activity_run_before_listing(tmp_path: Path, state: SiteState) -> None:
    cloud = MemoryCloud()
    plan = plan_activity_run(activity_run(tmp_path, include=["data/[x"]), state=state, cloud=cloud, epoch=1,
                             settings=SETTINGS)
    assert plan.failed and "unclosed '['" in cloud.failed["ar1"]
    assert cloud.failed["ar1"].startswith("cannot plan activity 'copy-in'") and state.pending() == []


def test_tables_of_unknown_size_plan_zero_bytes(tmp_path: Path, state: SiteState) -> None:
    import sqlite3

    db = tmp_path / "db.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.close()
    run = activity_run(tmp_path)
    run["source"] = {"store": {"name": "db", "type": "sql", "location": f"sqlite:///{db}"}, "path": "t"}

    plan = plan_activity_run(run, state=state, cloud=MemoryCloud(), epoch=1, settings=SETTINGS)

    assert plan.shards == [{"id": "ar1-00000", "index": 0, "files": 1, "bytes": 0}]
