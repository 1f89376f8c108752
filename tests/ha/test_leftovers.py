"""Staging of a node that never comes back (issue 8, item 6).

Given a 3-node site copying 12 MiB files at a limited bandwidth, when a node is
SIGKILLed while its shard has staged data in the sink and is never started again,
then the run succeeds on the other nodes and nothing staged is left: no
``.dmg-staging`` file in a file sink; no incomplete multipart upload in an S3 bucket
(moto). The node that ran each shard's new attempt removed the dead attempt's
staging (:mod:`workers.run.leftovers`), and the dead node's ``started`` set is empty.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dmg.cli.demo import compare_trees
from dmg.embedded.faults import SiteUnderTest
from dmg.site.state import SiteState
from tests.e2e.conftest import Credentials
from tests.ha.nodekit import dispatcher_of, site_state
from tests.ha.sitekit import ha_settings, require_redis, running_site, wait_for
from tests.servers.s3 import S3Server, s3_bucket, s3_server  # noqa: F401

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
FILES = 6
SIZE = 12 * MIB


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteUnderTest]:
    require_redis()
    running = SiteUnderTest(ha_settings(tmp_path / "site", shard_max_files=2), nodes=3, node_concurrency=1,
                            flower=False, startup_timeout=60)
    with running_site(running):
        yield running


def big_files(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for k in range(FILES):
        (folder / f"f{k}.bin").write_bytes(os.urandom(SIZE))
    return folder


def copy(site: SiteUnderTest, source: Path, sink: dict[str, Any], *, bandwidth: int) -> str:
    """Run a pipeline copying ``source`` to the ``sink`` store definition; the run id."""
    with site.client() as client:
        client.add_store({"name": "src", "type": "file", "location": str(source)})
        client.add_store({"name": "dst", **sink})
        client.create_pipeline({"name": "big", "gateway": site.gateway, "activities": [{
            "name": "files", "source": {"store": "src", "path": ""}, "sink": {"store": "dst", "path": "out"},
            "options": {"bandwidth": bandwidth}}]})
        return str(client.run_pipeline("big")["id"])


def kill_a_writer(site: SiteUnderTest, state: SiteState, staged: Callable[[], set[str]]) -> str:
    """Wait until some node's running shard has staged data (``staged()``: shard ids), then
    SIGKILL that node (the dispatcher's last); returns its name."""
    def victim() -> str:
        shards = staged()
        writers = [n for n in site.node_names if state.running(n) & shards]
        writers.sort(key=lambda n: n == dispatcher_of(state))
        return writers[0] if writers else ""

    name = wait_for(victim, timeout=60, what="a node with staged data")
    site.kill_node(name)
    return name


def finished(site: SiteUnderTest, run_id: str) -> dict[str, Any]:
    with site.client() as client:
        return wait_for(lambda: (r := client.run(run_id))["status"] in ("Succeeded", "Failed") and r,
                        timeout=150, what=f"run {run_id} to end")


def assert_recovered_without(site: SiteUnderTest, state: SiteState, run: dict[str, Any], victim: str) -> None:
    assert run["status"] == "Succeeded", run
    shards = [s for a in run["activity_runs"] for s in a["shards"]]
    assert victim not in {s["node"] for s in shards}, shards  # its shards ran again elsewhere
    assert not site.node_pids(victim)  # never restarted
    assert state.started(victim) == set()


def test_a_dead_nodes_staging_files_are_removed_from_a_file_sink(site: SiteUnderTest, tmp_path: Path) -> None:
    source, sink = big_files(tmp_path / "source"), tmp_path / "sink"
    sink.mkdir()
    run_id = copy(site, source, {"type": "file", "location": str(sink)}, bandwidth=6 * MIB)

    def staged() -> set[str]:  # .dmg-staging.<shard>.<attempt>.<name>
        return {p.name.split(".")[2] for p in sink.rglob(".dmg-staging.*") if p.stat().st_size}

    with site_state(site) as state:
        victim = kill_a_writer(site, state, staged)
        left = staged()
        assert left  # the dead attempt's staging is there to be cleaned
        run = finished(site, run_id)
        assert_recovered_without(site, state, run, victim)
    assert sorted(p.name for p in sink.rglob(".dmg-staging*")) == []
    diff = compare_trees(source, sink / "out")
    assert diff.matches, diff.describe()


def test_a_dead_nodes_multipart_uploads_are_aborted_in_s3(site: SiteUnderTest, tmp_path: Path,
                                                           s3_server: S3Server, s3_bucket: str) -> None:  # noqa: F811
    source = big_files(tmp_path / "source")
    credentials = Credentials(site.settings.credentials_path)
    credentials.set("dst", s3_server.credential)
    options = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
               "multipart_threshold": 5 * MIB, "multipart_chunksize": 5 * MIB}
    run_id = copy(site, source, {"type": "s3", "location": f"s3://{s3_bucket}/land", "options": options},
                  bandwidth=9 * MIB)
    client = s3_server.client()

    def uploads() -> list[dict[str, Any]]:
        return list(client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []))

    def staged() -> set[str]:  # shards writing a key with an incomplete upload
        keys = {u["Key"].rsplit("/", 1)[1] for u in uploads()}
        return {shard for node in site.node_names for shard in state.running(node)
                if keys & {e["path"] for e in (state.shard(shard) or {}).get("spec", {}).get("entries", [])}}

    with site_state(site) as state:
        victim = kill_a_writer(site, state, staged)
        assert uploads()
        run = finished(site, run_id)
        assert_recovered_without(site, state, run, victim)
    assert uploads() == []
    objects = client.list_objects_v2(Bucket=s3_bucket, Prefix="land/").get("Contents", [])
    expected = [(f"land/out/f{k}.bin", SIZE) for k in range(FILES)]
    assert sorted((o["Key"], o["Size"]) for o in objects) == expected
