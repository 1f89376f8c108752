"""Credentials synced across a real site: 3 nodes (real Redis, cloud, node processes), moto
with IAM checks on, PostgreSQL; secrets typed into the real ``dmg credentials`` CLI.

The module's tests share one site and run in order: set -> every node in sync; a node
stopped misses a version, comes back unable to keep it (its vault folder made immutable,
as a full or read-only disk would) and is Limited and gets no work needing that store,
then catches up by itself and gets work again; a node added later receives everything;
a dispatcher frozen, a new version set, then the dispatcher killed; and at the end no plaintext secret
is found in Redis, the cloud database, any file of the site, any log or ``ps``.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis as redis_lib

from dmg.cli.demo import KIB, generate_tree
from dmg.cli.runview import shards_of, wait_for_run
from dmg.embedded.faults import SiteUnderTest
from dmg.registration import node_dir
from settings import settings_environ
from tests.ha.sitekit import figure, module_site, wait_for
from tests.servers.postgres import PostgresServer, postgres_server  # noqa: F401
from tests.servers.s3 import S3Server, s3_server  # noqa: F401

pytestmark = pytest.mark.integration

WRONG = {"access_key_id": "AKIAWRONGWRONGWRONG1", "secret_access_key": "v1-wrong-secret-Zq8Lm2Xr"}
PG_PASSWORD = "pg-secret-Hy7Tq2Lw9Vb"
#: Every plaintext secret this module types; none may be found anywhere at the end.
SECRETS: list[str] = [WRONG["secret_access_key"], PG_PASSWORD]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteUnderTest]:
    yield from module_site(tmp_path_factory, nodes=3, node_concurrency=2)


@pytest.fixture(scope="module")
def iam_key(s3_server: S3Server) -> dict[str, str]:  # noqa: F811
    """An access key moto accepts once its IAM checks are on (the right credential)."""
    iam = boto3.client("iam", endpoint_url=s3_server.endpoint_url, region_name=s3_server.region,
                       aws_access_key_id="admin", aws_secret_access_key="admin")
    user = f"dmg-cred-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    SECRETS.append(key["SecretAccessKey"])
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


@pytest.fixture(scope="module")
def lake(site: SiteUnderTest, s3_server: S3Server) -> str:  # noqa: F811
    bucket = f"cred-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    with site.client() as client:
        client.add_store({"name": "lake", "type": "s3", "location": f"s3://{bucket}/out",
                          "options": {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
                                      "max_attempts": 1}})
    return bucket


def dmg(site: SiteUnderTest, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the real CLI against the site (the secret goes on stdin, never in argv)."""
    env = {**os.environ, **settings_environ(site.settings)}
    return subprocess.run([sys.executable, "-m", "dmg.cli", *args], input=stdin, text=True,
                          capture_output=True, env=env, timeout=60)


def set_credential(site: SiteUnderTest, store: str, fields: dict[str, str], *, as_json: bool = True) -> int:
    text = json.dumps(fields) if as_json else "".join(f"{k}={v}\n" for k, v in fields.items())
    done = dmg(site, "credentials", "set", store, stdin=text)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split("version ")[1].split()[0])


def nodes(site: SiteUnderTest) -> dict[str, dict[str, Any]]:
    with site.client() as client:
        return {str(n["name"]): n for n in client.list_nodes(site.gateway)}


def wait_status(site: SiteUnderTest, names: list[str], status: str, *, timeout: float = 30) -> None:
    def settled() -> bool:
        rows = nodes(site)
        return all(rows[n]["credential_status"] == status for n in names)
    wait_for(settled, timeout=timeout, what=f"{names} credential status {status!r} (now {nodes(site)})")


def held(site: SiteUnderTest, node: str) -> dict[str, int]:
    folder = node_dir(site.data_dir, node) / "credentials"
    return {p.stem: json.loads(p.read_text())["version"] for p in folder.glob("*.json")}


def copy_to_lake(site: SiteUnderTest, root: Path, name: str) -> dict[str, Any]:
    """A file -> lake run of 24 files in shards of 4 (6 shards); returns the finished run."""
    source = root / name
    generate_tree(source, small_files=24, large_files=0, small_size=(1 * KIB, 4 * KIB), seed=len(name))
    with site.client() as client:
        client.add_store({"name": f"{name}-src", "type": "file", "location": str(source)})
        client.create_pipeline({"name": name, "gateway": site.gateway, "activities": [{
            "name": "up", "source": {"store": f"{name}-src", "path": ""},
            "sink": {"store": "lake", "path": name}}]})
        run_id = str(client.run_pipeline(name)["id"])
        return wait_for_run(client, run_id, poll=0.2, timeout=90)


def assert_succeeded(run: dict[str, Any]) -> set[str]:
    """The run Succeeded; returns the nodes that ran its shards."""
    errors = [a.get("error") for a in run["activity_runs"]]
    errors += [(s["node"], s["error"]) for s in shards_of(run)]
    assert run["status"] == "Succeeded", errors
    return {str(s["node"]) for s in shards_of(run)}


def test_a_credential_set_reaches_every_node_sealed(site: SiteUnderTest, lake: str) -> None:
    assert set_credential(site, "lake", WRONG, as_json=False) == 1
    began = time.monotonic()
    wait_status(site, ["node1", "node2", "node3"], "in sync (1)")
    figure(site, "credential_set_to_all_3_in_sync_s", time.monotonic() - began)
    for node in ("node1", "node2", "node3"):
        folder = node_dir(site.data_dir, node)
        assert held(site, node) == {"lake": 1}
        for path in (folder / "node.key", folder / "gateway.json", folder / "credentials" / "lake.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    listed = json.loads(dmg(site, "credentials", "list", "--json").stdout)
    assert [(c["store"], c["version"], c["nodes"]) for c in listed["credentials"]] == [
        ("lake", 1, {"node1": 1, "node2": 1, "node3": 1})]


def test_a_node_that_misses_a_version_is_limited_skipped_and_catches_up(
        site: SiteUnderTest, lake: str, iam_key: dict[str, str], s3_server: S3Server,  # noqa: F811
        tmp_path: Path) -> None:
    site.stop_node("node3")
    assert set_credential(site, "lake", iam_key) == 2
    wait_status(site, ["node1", "node2"], "in sync (1)")
    wait_status(site, ["node3"], "out of sync: has v1 of 'lake', gateway has v2")

    vault = node_dir(site.data_dir, "node3") / "credentials"
    subprocess.run(["chattr", "+i", str(vault)], check=True)  # node3 cannot keep v2 (even as root)
    try:
        site.start_node("node3")
        reason = "out of sync: has v1 of 'lake', gateway has v2"
        def limited() -> bool:
            row = nodes(site)["node3"]
            return row["status"] == "Limited" and reason in row["reasons"]
        wait_for(limited, timeout=30, what="node3 Limited with its credential reason")
        s3_server.enforce_auth(True)
        try:
            run = copy_to_lake(site, tmp_path, "while-stale")
        finally:
            s3_server.enforce_auth(False)
        used = assert_succeeded(run)
        assert "node3" not in used and used, used
        assert held(site, "node3") == {"lake": 1}
    finally:
        subprocess.run(["chattr", "-i", str(vault)], check=True)

    wait_status(site, ["node1", "node2", "node3"], "in sync (1)")  # by itself, no restart
    assert held(site, "node3") == {"lake": 2}
    wait_for(lambda: nodes(site)["node3"]["status"] == "Online", timeout=30, what="node3 Online")
    s3_server.enforce_auth(True)
    try:
        run = copy_to_lake(site, tmp_path, "after-catch-up")
    finally:
        s3_server.enforce_auth(False)
    assert "node3" in assert_succeeded(run)  # work resumes on node3


def test_a_node_added_later_receives_every_credential_and_both_copy(
        site: SiteUnderTest, lake: str, postgres_server: PostgresServer,  # noqa: F811
        s3_server: S3Server) -> None:  # noqa: F811
    import psycopg

    url = postgres_server.create_database(f"cred_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.execute("INSERT INTO orders VALUES (1, 'ann'), (2, 'bob')")
    with site.client() as client:
        client.add_store({"name": "warehouse", "type": "sql", "location": url})
    assert set_credential(site, "warehouse", {"password": PG_PASSWORD}) == 1
    site.add_node("node4")
    wait_status(site, ["node1", "node2", "node3", "node4"], "in sync (2)")
    assert held(site, "node4") == {"lake": 2, "warehouse": 1}

    # PostgreSQL -> S3 (moto checking the key) with the two synced credentials. The test
    # cluster trusts local connections: the password is carried, S3 is what checks its key.
    with site.client() as client:
        client.create_pipeline({"name": "pg-to-lake", "gateway": site.gateway, "activities": [{
            "name": "orders", "source": {"store": "warehouse", "path": "orders"},
            "sink": {"store": "lake", "path": "pg"}}]})
        s3_server.enforce_auth(True)
        try:
            run = wait_for_run(client, str(client.run_pipeline("pg-to-lake")["id"]), poll=0.2, timeout=60)
        finally:
            s3_server.enforce_auth(False)
    assert_succeeded(run)
    body = s3_server.client().get_object(Bucket=lake, Key="out/pg/orders")["Body"].read()
    assert body == b"id,name\n1,ann\n2,bob\n"


def test_a_dispatcher_that_dies_with_a_sync_pending_loses_nothing(site: SiteUnderTest, lake: str,
                                                                   iam_key: dict[str, str]) -> None:
    dispatcher = next(name for name, row in nodes(site).items() if row["role"] == "dispatcher")
    for pid in site.node_pids(dispatcher):  # frozen: it cannot hand v3 to anyone
        os.kill(pid, signal.SIGSTOP)
    assert set_credential(site, "lake", iam_key) == 3
    site.kill_node(dispatcher)
    began = time.monotonic()
    others = [n for n in site.node_names if n != dispatcher]
    wait_status(site, others, "in sync (2)", timeout=45)
    figure(site, "dispatcher_killed_to_others_in_sync_s", time.monotonic() - began)
    assert all(held(site, n)["lake"] == 3 for n in others)
    logs = {n: (site.data_dir / "logs" / f"{n}.log").read_text() for n in others}
    handed = [n for n, text in logs.items() if "credential handed over store=lake version=3" in text]
    assert handed, "a surviving node handed v3 over"
    site.start_node(dispatcher)
    wait_status(site, site.node_names, "in sync (2)", timeout=45)


def test_no_plaintext_secret_anywhere(site: SiteUnderTest) -> None:
    wanted = [s.encode() for s in SECRETS]
    found: list[str] = []
    client = redis_lib.Redis.from_url(site.broker_url())
    try:
        for key in client.scan_iter(count=1000):
            dumped = client.dump(key) or b""
            found += [f"redis {key!r}" for s in wanted if s in dumped]
    finally:
        client.close()
    for path in sorted(site.data_dir.rglob("*")):  # the cloud database, node dirs, logs, AOF
        if path.is_file():
            data = path.read_bytes()
            found += [f"file {path}" for s in wanted if s in data]
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, check=True).stdout
    found += ["ps" for s in wanted if s in ps]
    assert not found, found
