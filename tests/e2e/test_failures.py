"""Failures through the whole two-node gateway: each ends the run with a clear error,
copies nothing it should not, and never shows a secret."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import boto3
import pytest

from dmg.errors import BadInput
from tests.cli.conftest import DmgRunner
from tests.e2e.conftest import Gateway, assert_succeeded, failure, shards, unique, wait_until
from tests.servers.s3 import MotoServer, S3Server

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
WRONG_SECRET = "wrong-secret-never-shown-3f9a"


def write_files(root: Path, files: dict[str, int]) -> dict[str, bytes]:
    content = {}
    root.mkdir(parents=True, exist_ok=True)
    for rel, size in files.items():
        content[rel] = os.urandom(size)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content[rel])
    return content


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def objects(server: S3Server, bucket: str) -> dict[str, bytes]:
    client = server.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def dmg_cli(gateway: Gateway) -> DmgRunner:
    site = gateway.site
    return DmgRunner(env={"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                          "DMG_API_TOKEN": site.settings.api_token})


def site_files_holding(gateway: Gateway, secret: str) -> list[str]:
    """Files of the site (logs, cloud database, Redis data) that contain ``secret``."""
    found = []
    for path in gateway.site.data_dir.rglob("*"):
        if path.is_file() and path != gateway.credentials.path and secret.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_an_s3_store_down_mid_copy_fails_the_run_and_leaves_no_partial_object(
        gateway: Gateway, tmp_path: Path) -> None:
    content = write_files(tmp_path / "source", {f"f{i}.bin": 6 * MiB + i for i in range(4)})
    moto = MotoServer().start()
    inspector: MotoServer | None = None
    try:
        server = S3Server(moto.endpoint_url)
        bucket = unique("down")
        server.client().create_bucket(Bucket=bucket)
        source = gateway.store("file", str(tmp_path / "source"), {"shared": True})
        sink = gateway.store("s3", f"s3://{bucket}", {
            "endpoint_url": server.endpoint_url, "region": server.region, "multipart_threshold": 5 * MiB,
            "multipart_chunksize": 5 * MiB, "max_attempts": 1, "connect_timeout": 1, "read_timeout": 5},
            credential=server.credential)
        # Two shards, one file at a time each, 4 MiB/s for the activity: the first files
        # land after about 3 s, the last ones 3 s later.
        run_id = gateway.start(gateway.pipeline((source, ""), (sink, ""), {
            "bandwidth": "4M", "parallel_files": 1, "retries": 1, "retry_backoff": 0.1}))
        # Listed only, with one client: a probe that downloads every object (6 MiB each) let
        # the last ones land too before the endpoint went away on a loaded machine.
        lister = server.client()
        wait_until(lambda: lister.list_objects_v2(Bucket=bucket).get("KeyCount"), timeout=60,
                   what="a first object in the bucket")
        moto.stop()  # the S3 endpoint goes away mid-copy

        run = gateway.finish(run_id, timeout=90)

        error = failure(run)
        assert "S3 endpoint unreachable" in error or "connection to S3 failed" in error, error
        # The same in-process S3 backend, seen through a new endpoint:
        inspector = MotoServer().start()
        visible = objects(S3Server(inspector.endpoint_url), bucket)
        assert 0 < len(visible) < len(content)
        for key, data in visible.items():
            assert data == content[key], f"{key} is visible but not complete"
    finally:
        moto.stop()
        if inspector is not None:
            inspector.stop()


def test_wrong_s3_keys_in_the_credentials_file_are_a_clear_error(
        gateway: Gateway, s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    iam = boto3.client("iam", endpoint_url=s3_server.endpoint_url, region_name=s3_server.region,
                       aws_access_key_id="admin", aws_secret_access_key="admin")
    user = unique("dmg-node")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    s3_server.client().put_object(Bucket=s3_bucket, Key="in/report.csv", Body=b"a,b\n1,2\n")
    options = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region, "max_attempts": 1}
    good = gateway.store("s3", f"s3://{s3_bucket}", options,
                         credential={"access_key_id": key["AccessKeyId"],
                                     "secret_access_key": key["SecretAccessKey"]})
    wrong = {"access_key_id": "AKIAWRONGWRONGWRONG1", "secret_access_key": WRONG_SECRET}
    bad = gateway.store("s3", f"s3://{s3_bucket}", options, credential=wrong)
    (tmp_path / "sink").mkdir()
    sink = gateway.store("file", str(tmp_path / "sink"), {"shared": True})

    s3_server.enforce_auth(True)
    try:
        with_good_keys = gateway.copy((good, "in"), (sink, "good"))
        with_bad_keys = gateway.copy((bad, "in"), (sink, "bad"))
    finally:
        s3_server.enforce_auth(False)

    assert_succeeded(with_good_keys)
    assert read_tree(tmp_path / "sink") == {"good/report.csv": b"a,b\n1,2\n"}
    error = failure(with_bad_keys)
    assert f"cannot list 'in' in store {bad!r}: access denied by S3" in error, error
    assert "check this node's S3 credentials" in error
    shown = dmg_cli(gateway)("runs", "show", str(with_bad_keys["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "Failed" in shown.stdout and f"store {bad!r}: access denied by S3" in shown.stdout
    assert WRONG_SECRET not in shown.stdout + shown.stderr
    assert site_files_holding(gateway, WRONG_SECRET) == []
    assert site_files_holding(gateway, str(key["SecretAccessKey"])) == []


def test_a_path_outside_the_store_is_refused_and_nothing_is_copied(gateway: Gateway, tmp_path: Path) -> None:
    write_files(tmp_path / "root" / "source", {"a.txt": 10, "b.txt": 20})
    write_files(tmp_path / "root" / "secret", {"passwd": 30})
    (tmp_path / "root" / "sink").mkdir()
    source = gateway.store("file", str(tmp_path / "root" / "source"), {"shared": True})
    sink = gateway.store("file", str(tmp_path / "root" / "sink"), {"shared": True})

    # Refused when the pipeline is submitted (dmg.definitions); the connectors refuse it
    # again at run time (tests/connectors).
    with pytest.raises(BadInput, match=r"source path '\.\./secret' has a '\.\.' segment"):
        gateway.pipeline((source, "../secret"), (sink, ""))
    with pytest.raises(BadInput, match=r"sink path '\.\./escaped' has a '\.\.' segment"):
        gateway.pipeline((source, ""), (sink, "../escaped"))

    assert read_tree(tmp_path / "root" / "sink") == {}
    assert not (tmp_path / "root" / "escaped").exists()
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["secret", "sink", "source"]


def test_a_table_that_does_not_exist_is_a_clear_error(gateway: Gateway, tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, qty INTEGER)")
    conn.close()
    store = gateway.store("sql", f"sqlite:///{database}", {"shared": True})
    write_files(tmp_path / "in", {"missing": 0})
    (tmp_path / "in" / "missing").write_text("id,qty\n1,2\n")
    files = gateway.store("file", str(tmp_path / "in"), {"shared": True})

    reading = gateway.copy((store, "no_such_table"), (files, "out"))
    writing = gateway.copy((files, "missing"), (store, ""))

    assert f"table 'no_such_table' does not exist in store {store!r}" in failure(reading)
    error = failure(writing)
    assert "'missing'" in error and "does not exist" in error, error
    assert not (tmp_path / "in" / "out").exists()
    with sqlite3.connect(database) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    assert "missing" not in tables


def test_a_path_only_one_node_sees_gets_a_warning_and_work_only_there(gateway: Gateway,
                                                                     tmp_path: Path) -> None:
    """``~`` differs per node (as on two machines): only node1 has ``~/outbox``."""
    content = write_files(tmp_path / "source", {f"f{i}.txt": 100 + i for i in range(6)})
    outbox = {node: home / "outbox" for node, home in gateway.homes.items()}
    outbox["node1"].mkdir()
    source = gateway.store("file", str(tmp_path / "source"), {"shared": True})
    sink = gateway.store("file", "~/outbox")
    assert any("local path '~/outbox' may not be visible to every node" in w
               for w in gateway.stores[sink]["warnings"])
    pipeline = gateway.pipeline((source, ""), (sink, ""))
    assert [w for w in pipeline["warnings"] if repr(sink) in w], pipeline["warnings"]

    nodes = gateway.wait_reachability(sink, unreachable_from=("node2",))
    assert not [r for r in nodes["node1"]["reasons"] if repr(sink) in r]
    assert nodes["node2"]["status"] == "Limited"
    assert any(r.startswith(f"store {sink!r}: {outbox['node2']} does not exist on this node")
               for r in nodes["node2"]["reasons"]), nodes["node2"]["reasons"]

    run = gateway.finish(gateway.start(pipeline))

    parts = assert_succeeded(run)
    assert len(parts) == 3 and {s["node"] for s in parts} == {"node1"}
    assert read_tree(outbox["node1"]) == content
    assert not outbox["node2"].exists()

    outbox["node2"].mkdir()  # the share is mounted there too now
    nodes = gateway.wait_reachability(sink, unreachable_from=())
    assert not [r for r in nodes["node2"]["reasons"] if repr(sink) in r]


def test_shards_show_the_node_and_error(gateway: Gateway, tmp_path: Path) -> None:
    """A failed copy names the node and the file in the shard (what ``dmg runs show`` prints)."""
    write_files(tmp_path / "source", {"a.txt": 10})
    (tmp_path / "sink").mkdir()
    (tmp_path / "sink" / "a.txt").mkdir()  # a directory where the file must go
    source = gateway.store("file", str(tmp_path / "source"), {"shared": True})
    sink = gateway.store("file", str(tmp_path / "sink"), {"shared": True})

    run = gateway.copy((source, ""), (sink, ""), {"overwrite": "always"})

    failure(run)
    (shard,) = shards(run)
    assert shard["status"] == "failed" and shard["node"] in ("node1", "node2")
    assert "a.txt" in shard["error"]
    shown: subprocess.CompletedProcess[str] = dmg_cli(gateway)("runs", "show", str(run["id"]))
    assert shown.returncode == 0 and "a.txt" in shown.stdout and shard["node"] in shown.stdout

