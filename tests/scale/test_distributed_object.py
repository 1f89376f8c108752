"""One very large object written from several nodes and committed once.

Given an embedded site of three nodes (one job each) and an activity whose one
24 MiB file is above ``split_above`` (8 MiB), with 5 MiB parts: the planner cuts
it into five part shards, they run on more than one node, and the sink commits
the object once — file→s3 (moto: one multipart upload, none left over),
file→azureblob (Azurite: one block list) and file→file (one shared staging file
renamed). The sink's object is byte-identical (MD5 of the whole), the cloud counts
it as one file and its bytes once. When a node is SIGKILLed while it writes a
part, the part runs again elsewhere and the object is still whole and committed
once; a part that fails for good fails the run and aborts the upload.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from azure.storage.blob import BlobServiceClient

from dmg.embedded.faults import SiteUnderTest
from dmg.shards.status import STATE_RUNNING
from dmg.site.state import SiteState
from tests.e2e.conftest import Credentials, unique
from tests.ha.nodekit import dispatcher_of
from tests.scale.support import need_redis, site_settings, wait_for
from tests.servers.azurite import AzuriteServer
from tests.servers.relay import Faults, Relay
from tests.servers.s3 import S3Server

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
SIZE = 24 * MIB
PART = 5 * MIB
PARTS = 5  # 5 + 5 + 5 + 5 + 4 MiB
SPLIT = {"split_above": 8 * MIB, "split_part_size": PART, "overwrite": "always"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteUnderTest]:
    need_redis()
    root = tmp_path_factory.mktemp("split")
    running = SiteUnderTest(site_settings(root / "data", shard_max_files=4), nodes=3, node_concurrency=1,
                            flower=False, startup_timeout=60)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder with one 24 MiB file (and its MD5)."""
    folder = tmp_path_factory.mktemp("source")
    data = os.urandom(SIZE)
    (folder / "big.bin").write_bytes(data)
    return folder, hashlib.md5(data).hexdigest()


@pytest.fixture
def state(site: SiteUnderTest) -> Iterator[SiteState]:
    client = redis_lib.Redis.from_url(site.broker_url())
    try:
        yield SiteState(client, site.gateway)
    finally:
        client.close()


def add_store(site: SiteUnderTest, kind: str, location: str, options: dict[str, Any] | None = None,
              credential: dict[str, str] | None = None) -> str:
    name = unique(kind)
    if credential is not None:
        credentials = Credentials(site.settings.credentials_path)
        if site.settings.credentials_path.exists():  # keep the stores of earlier tests
            import tomllib
            body = tomllib.loads(site.settings.credentials_path.read_text())
            credentials.entries = {k: dict(v) for k, v in body.get("stores", {}).items()}
        credentials.set(name, credential)
    with site.client() as client:
        client.add_store({"name": name, "type": kind, "location": location, "options": options or {}})
    return name


def run_copy(site: SiteUnderTest, source: str, sink: str, sink_path: str,
             options: dict[str, Any]) -> str:
    with site.client() as client:
        pipeline = client.create_pipeline({"name": unique("split"), "gateway": site.gateway, "activities": [
            {"name": "big", "source": {"store": source, "path": ""},
             "sink": {"store": sink, "path": sink_path}, "options": options}]})
        return str(client.run_pipeline(str(pipeline["name"]))["id"])


def finished(site: SiteUnderTest, run_id: str, *, timeout: float = 90) -> dict[str, Any]:
    with site.client() as client:
        return wait_for(lambda: (r := client.run(run_id))["status"] in ("Succeeded", "Failed") and r,
                        timeout=timeout, what=f"run {run_id} to end", every=0.2)


def assert_split_and_counted_once(run: dict[str, Any]) -> set[str]:
    """The run succeeded as five part shards on more than one node; one file, its bytes once."""
    [activity] = run["activity_runs"]
    assert run["status"] == "Succeeded", activity["error"]
    shards = activity["shards"]
    assert len(shards) == PARTS and {s["status"] for s in shards} == {"succeeded"}, shards
    assert sum(s["files"] for s in shards) == 1
    assert sum(s["bytes"] for s in shards) == SIZE
    return {s["node"] for s in shards}


def s3_options(server: S3Server) -> dict[str, Any]:
    return {"endpoint_url": server.endpoint_url, "region": server.region}


def s3_md5(server: S3Server, bucket: str, key: str) -> str:
    body = server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return hashlib.md5(body).hexdigest()


def test_file_to_s3_parts_from_several_nodes_one_multipart_commit(
        site: SiteUnderTest, big_file: tuple[Path, str], s3_server: S3Server, s3_bucket: str) -> None:
    folder, md5 = big_file
    source = add_store(site, "file", str(folder))
    sink = add_store(site, "s3", f"s3://{s3_bucket}/landing", s3_options(s3_server),
                     credential=s3_server.credential)

    run = finished(site, run_copy(site, source, sink, "in", SPLIT))

    nodes = assert_split_and_counted_once(run)
    assert len(nodes) > 1, nodes
    client = s3_server.client()
    head = client.head_object(Bucket=s3_bucket, Key="landing/in/big.bin")
    assert head["ContentLength"] == SIZE and head["ETag"].strip('"').endswith(f"-{PARTS}")
    assert s3_md5(s3_server, s3_bucket, "landing/in/big.bin") == md5
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    # The cloud's per-file report lists the object once, with S3's composite CRC-32 of its
    # parts (the checksum that verified them: each part's CRC-32, checked by S3).
    with site.client() as cloud:
        rows = wait_for(lambda: cloud.run_report(run["id"]), timeout=10, what="the per-file report")
    assert [(r["path"], r["status"], r["bytes"]) for r in rows] == [("in/big.bin", "copied", SIZE)]
    stored = client.head_object(Bucket=s3_bucket, Key="landing/in/big.bin", ChecksumMode="ENABLED")
    composite = base64.b64decode(str(stored["ChecksumCRC32"]).split("-")[0]).hex()
    assert rows[0]["checksum"] == f"crc32:{composite}-{PARTS}"
    assert rows[0]["verified"] == "size,part-crc32"


def test_file_to_azureblob_parts_from_several_nodes_one_block_list(
        site: SiteUnderTest, big_file: tuple[Path, str], azurite: AzuriteServer,
        azure_container: str) -> None:
    folder, md5 = big_file
    source = add_store(site, "file", str(folder))
    sink = add_store(site, "azureblob", f"azureblob://{azure_container}/backup",
                     {"account_url": azurite.account_url}, credential=azurite.credential)

    run = finished(site, run_copy(site, source, sink, "", SPLIT))

    nodes = assert_split_and_counted_once(run)
    assert len(nodes) > 1, nodes
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        blob = service.get_container_client(azure_container).get_blob_client("backup/big.bin")
        assert hashlib.md5(blob.download_blob().readall()).hexdigest() == md5
        committed, uncommitted = blob.get_block_list("all")
        assert len(committed) >= PARTS and not uncommitted


def test_file_to_file_parts_from_several_nodes_one_rename(
        site: SiteUnderTest, big_file: tuple[Path, str], tmp_path: Path) -> None:
    folder, md5 = big_file
    target = tmp_path / "sink"
    target.mkdir()
    source = add_store(site, "file", str(folder))
    sink = add_store(site, "file", str(target))

    run = finished(site, run_copy(site, source, sink, "copy", SPLIT))

    nodes = assert_split_and_counted_once(run)
    assert len(nodes) > 1, nodes
    written = target / "copy" / "big.bin"
    assert hashlib.md5(written.read_bytes()).hexdigest() == md5
    assert [p.name for p in (target / "copy").iterdir()] == ["big.bin"]  # no staging file left


def test_small_objects_are_not_split(site: SiteUnderTest, tmp_path: Path) -> None:
    folder, target = tmp_path / "small", tmp_path / "out"
    folder.mkdir()
    target.mkdir()
    (folder / "a.bin").write_bytes(os.urandom(MIB))
    source, sink = add_store(site, "file", str(folder)), add_store(site, "file", str(target))

    run = finished(site, run_copy(site, source, sink, "", SPLIT))

    [activity] = run["activity_runs"]
    assert run["status"] == "Succeeded", activity["error"]
    assert len(activity["shards"]) == 1 and activity["shards"][0]["files"] == 1
    assert (target / "a.bin").read_bytes() == (folder / "a.bin").read_bytes()


def test_a_part_that_fails_for_good_fails_the_run_and_aborts_the_upload(
        site: SiteUnderTest, tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    folder = tmp_path / "shrinks"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(SIZE))
    source = add_store(site, "file", str(folder))
    sink = add_store(site, "s3", f"s3://{s3_bucket}/x", s3_options(s3_server),
                     credential=s3_server.credential)
    # The file shrinks after planning: the parts past its new end read short and fail.
    run_id = run_copy(site, source, sink, "", {**SPLIT, "bandwidth": 2 * MIB, "retries": 0})
    with site.client() as client:
        wait_for(lambda: client.run(run_id)["activity_runs"][0]["shards"], timeout=30, what="the plan")
    os.truncate(folder / "big.bin", 3 * MIB)

    finished(site, run_id)
    with site.client() as client:  # the parts still in flight stop too (none runs into the next test)
        def all_parts_ended() -> dict[str, Any] | None:
            current = client.run(run_id)
            shards = current["activity_runs"][0]["shards"]
            return current if all(s["status"] in ("succeeded", "failed") for s in shards) else None
        run = wait_for(all_parts_ended, timeout=60, what="every part to end")

    [activity] = run["activity_runs"]
    assert run["status"] == "Failed", activity
    errors = [s["error"] for s in activity["shards"] if s["status"] == "failed"]
    assert any("expected" in e for e in errors), errors  # the short read, said
    assert all("expected" in e or "abandoned" in e for e in errors), errors  # the rest stopped
    client = s3_server.client()
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_a_node_killed_mid_part_the_part_runs_elsewhere_and_the_object_is_committed_once(
        site: SiteUnderTest, state: SiteState, tmp_path: Path, big_file: tuple[Path, str],
        s3_server: S3Server, s3_bucket: str) -> None:
    folder, md5 = big_file
    source = add_store(site, "file", str(folder))
    sink = add_store(site, "s3", f"s3://{s3_bucket}/k", s3_options(s3_server),
                     credential=s3_server.credential)
    leader = wait_for(lambda: dispatcher_of(state), timeout=10, what="a dispatcher")
    # Throttled (the whole run shares 4 MiB/s) so that parts are in flight when the node dies.
    run_id = run_copy(site, source, sink, "", {**SPLIT, "bandwidth": 4 * MIB})
    with site.client() as client:
        activity_run_id = wait_for(lambda: client.run(run_id)["activity_runs"][0]["id"], timeout=10,
                                   what="the activity run")

    def victim_part() -> tuple[str, str] | None:
        for node in site.node_names:
            if node != leader:
                for shard_id in state.running(node):
                    shard = state.shard(shard_id) or {}
                    spec = shard.get("spec") or {}
                    if (shard.get("state") == STATE_RUNNING and spec.get("kind") == "part"
                            and spec.get("activity_run_id") == activity_run_id):
                        return node, shard_id
        return None

    victim, shard_id = wait_for(victim_part, timeout=30, what="a worker node writing a part", every=0.02)
    site.kill_node(victim)
    try:
        run = finished(site, run_id, timeout=120)
        nodes = assert_split_and_counted_once(run)
        rerun = next(s for s in run["activity_runs"][0]["shards"] if s["id"] == shard_id)
        assert rerun["node"] != victim and rerun["attempt"] > 1, rerun
        assert victim not in nodes or len(nodes) > 1
        client = s3_server.client()
        assert s3_md5(s3_server, s3_bucket, "k/big.bin") == md5
        assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
        assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["k/big.bin"]
    finally:
        site.start_node(victim)
        with contextlib.suppress(AssertionError):  # cleanup: never hide the test's own failure
            wait_for(lambda: site.node_pids(victim), timeout=30, what=f"{victim} started again")


def test_a_node_killed_while_it_sends_a_part_from_the_file_the_part_is_redone_once_elsewhere(
        site: SiteUnderTest, state: SiteState, big_file: tuple[Path, str],
        s3_server: S3Server, s3_bucket: str) -> None:
    """No bandwidth limit: each part is read from the file and sent with its CRC-32 (the
    path of an unthrottled file → S3 split). A relay holds every part's request until each
    node has one in flight; a worker node is SIGKILLed then. Its part runs once more, on
    another node; the object is whole (byte for byte) and committed once."""
    folder, md5 = big_file
    faults = Faults(hold=lambda seen: seen.method == "PUT" and "partNumber=" in seen.path)
    relay = Relay(s3_server.endpoint_url, faults)
    victim = ""
    try:
        source = add_store(site, "file", str(folder))
        options = {**s3_options(s3_server), "endpoint_url": relay.url}
        sink = add_store(site, "s3", f"s3://{s3_bucket}/held", options, credential=s3_server.credential)
        leader = wait_for(lambda: dispatcher_of(state), timeout=10, what="a dispatcher")
        run_id = run_copy(site, source, sink, "", SPLIT)
        wait_for(lambda: len(faults.held) >= len(site.node_names), timeout=30,
                 what="a part in flight on every node", every=0.02)

        def part_on(node: str) -> str | None:
            return next((shard_id for shard_id in state.running(node)
                         if ((state.shard(shard_id) or {}).get("spec") or {}).get("kind") == "part"), None)

        victim = next(node for node in site.node_names if node != leader)
        shard_id = wait_for(lambda: part_on(victim), timeout=10, what="the victim's part")
        site.kill_node(victim)
        faults.release.set()

        run = finished(site, run_id, timeout=120)
        assert_split_and_counted_once(run)
        rerun = next(s for s in run["activity_runs"][0]["shards"] if s["id"] == shard_id)
        assert rerun["node"] != victim and rerun["attempt"] == 2, rerun  # redone once
        client = s3_server.client()
        assert s3_md5(s3_server, s3_bucket, "held/big.bin") == md5
        assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
        assert [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="held/")["Contents"]] \
            == ["held/big.bin"]
    finally:
        faults.release.set()
        relay.close()
        if victim:
            site.start_node(victim)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: site.node_pids(victim), timeout=30, what=f"{victim} started again")
