"""The compose file's services run as plain processes, as the containers would run them.

Each service's entrypoint and command (the Dockerfile's where the service gives none) run
with the environment the compose file gives it (and the Dockerfile's ``ENV``), its ports
mapped to free ones on 127.0.0.1 and its volumes to temporary directories (the nodes
share one ``share`` directory and each has its own data directory). Redis is the
system's ``redis-server`` with the compose file's arguments. Then, as the compose
file's header says: the cli creates gateway ``site``, the nodes register with its key
and start, a store's secret is set through the cli (and reaches the nodes by the
credential sync, never through the compose file), and a copy runs end to end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dmg.cli.demo import KIB, generate_tree
from dmg.embedded.redis import redis_binary
from dmg.errors import Fatal
from dmg.procs import free_port, wait_for_port, wait_then_kill
from tests.conftest import require
from tests.containers import composekit as kit
from tests.containers.test_compose_file import ENV
from tests.servers.s3 import S3Server, s3_server  # noqa: F401
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
FILES = 12
BUCKET = "compose-lake"


class ComposeSite:
    """The compose file's services as processes, started on demand; :meth:`stop` ends them."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = dict(env)
        self.config = kit.compose_config(self.env)
        ports = {(name, port): free_port() for name, targets in kit.published_ports(self.config).items()
                 for port in targets}
        ports[("redis", 6379)] = free_port()
        volumes = {name: tmp / "volumes" / name for name in self.config.get("volumes") or {}}
        self.mapper = kit.Mapper(ports=ports, volumes=volumes, scratch=tmp / "scratch", bin_dir=BIN)
        self.ports = ports
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def reload(self, **env: str) -> None:
        """``docker-compose config`` again with more of the user's variables (the gateway key)."""
        self.env.update(env)
        self.config = kit.compose_config(self.env)

    def plan(self, name: str, *args: str) -> kit.ProcessPlan:
        return self.mapper.plan(name, self.config["services"][name], extra_args=args)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        if name == "redis":
            argv = self.config["services"]["redis"]["command"]
            assert argv[0] == "redis-server"
            data = self.tmp / "volumes" / "redis-data"
            data.mkdir(parents=True, exist_ok=True)
            argv = [redis_binary(), *argv[1:], "--port", str(self.ports[("redis", 6379)]),
                    "--bind", "127.0.0.1", "--dir", str(data)]
            plan = kit.ProcessPlan(name="redis", argv=argv, env={"PATH": "/usr/bin:/bin"})
        else:
            plan = self.plan(name)
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(plan.argv, env=plan.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=plan.env.get("HOME", self.tmp))
        return self.procs[name]

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker compose run --rm cli ARGS``, as a process."""
        plan = self.plan("cli", *args)
        done = subprocess.run(plan.argv, env=plan.env, input=stdin, text=True, capture_output=True,
                              timeout=120)
        if check:
            assert done.returncode == 0, f"dmg {' '.join(args)}: {done.stderr}"
        return done

    def local(self, container_path: str, *, service: str = "node1") -> Path:
        return Path(self.mapper.text(service, self.config["services"][service], container_path))

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def alive(self) -> dict[str, int | None]:
        return {name: proc.poll() for name, proc in self.procs.items()}

    def stop(self) -> dict[str, int | None]:
        """SIGTERM to every service at once (as `docker compose down`), then wait for each
        (SIGKILL after 30 s); -> every service's exit code."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return {name: wait_then_kill(proc, timeout=30) for name, proc in self.procs.items()}


@pytest.fixture
def compose_site(tmp_path: Path) -> Iterator[ComposeSite]:
    require(kit.docker_compose() is not None,
            "docker-compose is not installed (Debian package docker-compose)")
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    site = ComposeSite(tmp_path, ENV | {"DMG_GATEWAY_KEY": ""})
    try:
        yield site
    finally:
        site.stop()


@pytest.fixture
def iam_key(s3_server: S3Server) -> Iterator[dict[str, str]]:  # noqa: F811
    """An access key moto accepts with its IAM checks on: the copy needs the right one."""
    import boto3

    iam = boto3.client("iam", endpoint_url=s3_server.endpoint_url, region_name=s3_server.region,
                       aws_access_key_id="admin", aws_secret_access_key="admin")
    iam.create_user(UserName="dmg-compose")
    iam.put_user_policy(UserName="dmg-compose", PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="dmg-compose")["AccessKey"]
    s3_server.client().create_bucket(Bucket=BUCKET)
    s3_server.enforce_auth(True)
    try:
        yield {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
    finally:
        s3_server.enforce_auth(False)


def nodes(site: ComposeSite) -> dict[str, dict[str, Any]]:
    rows = json.loads(site.cli("node", "list", "--gateway", "site", "--json").stdout)
    return {str(row["name"]): row for row in rows}


def test_the_compose_site_runs_a_copy_end_to_end(compose_site: ComposeSite, s3_server: S3Server,  # noqa: F811
                                                 iam_key: dict[str, str]) -> None:
    site = compose_site
    # given redis and the cloud, as `docker compose up -d redis cloud`
    redis = site.start("redis")
    wait_for_port("127.0.0.1", site.ports[("redis", 6379)], timeout=20, proc=redis,
                  what=f"redis (log: {site.log('redis')})")
    cloud = site.start("cloud")
    cloud_url = f"http://127.0.0.1:{site.ports[('cloud', 8050)]}"
    wait_for(lambda: httpx.get(f"{cloud_url}/api/v1/health", timeout=2).status_code == 200,
             timeout=60, what="the cloud's health", tolerate=(httpx.HTTPError,))
    assert cloud.poll() is None

    # when the cli creates the gateway and the nodes register with its key and start
    created = site.cli("gateway", "create", "site").stdout
    assert "key1: " in created, created
    key = next(line.split()[-1] for line in created.splitlines() if "key1" in line)
    site.reload(DMG_GATEWAY_KEY=key)
    for name in ("node1", "node2", "flower"):
        site.start(name)
    online = {"node1": "Online", "node2": "Online"}
    try:
        wait_for(lambda: {n: r["status"] for n, r in nodes(site).items()} == online,
                 timeout=90, interval=0.5, what="node1 and node2 Online")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; node1: {site.log('node1')}; node2: {site.log('node2')}") from None
    for name in ("node1", "node2"):
        registered = site.local(f"/data/nodes/{name}/node.json", service=name)
        assert registered.is_file(), f"{name} registered in its own data volume"
    assert {r["sized_by"] for r in nodes(site).values()} <= {"host", "cgroup"}

    # Flower answers, behind its basic auth
    flower = f"http://127.0.0.1:{site.ports[('flower', 5555)]}/"
    wait_for(lambda: httpx.get(flower, timeout=2).status_code == 401, timeout=60, interval=0.3,
             what="Flower's 401 without a password", tolerate=(httpx.HTTPError,))
    assert httpx.get(flower, auth=("admin", ENV["DMG_FLOWER_PASSWORD"]), timeout=10).status_code == 200

    # a secret set through the cli reaches both nodes by the credential sync
    bucket = BUCKET
    share = site.local("/share")
    generate_tree(share / "in", small_files=FILES, large_files=0, small_size=(1 * KIB, 4 * KIB), seed=12)
    definitions = {
        "src.json": {"name": "src", "type": "file", "location": str(share / "in")},
        "lake.json": {"name": "lake", "type": "s3", "location": f"s3://{bucket}/out",
                      "options": {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region}},
        "nightly.json": {"name": "nightly", "gateway": "site", "activities": [{
            "name": "copy", "source": {"store": "src", "path": ""}, "sink": {"store": "lake", "path": ""}}]},
    }
    for filename, body in definitions.items():
        (share / filename).write_text(json.dumps(body))
    site.cli("store", "add", "/share/src.json")
    site.cli("store", "add", "/share/lake.json")
    site.cli("pipeline", "create", "/share/nightly.json")
    site.cli("credentials", "set", "lake",
             stdin="".join(f"{k}={v}\n" for k, v in iam_key.items()))
    wait_for(lambda: {n: r["credential_status"] for n, r in nodes(site).items()}
             == {"node1": "in sync (1)", "node2": "in sync (1)"},
             timeout=60, interval=0.5, what="both nodes holding the credential")

    # then a copy runs end to end
    done = site.cli("pipeline", "run", "nightly", "--wait", "--timeout", "120", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    import boto3

    reader = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name=s3_server.region,
                          aws_access_key_id=iam_key["access_key_id"],
                          aws_secret_access_key=iam_key["secret_access_key"])
    listed = reader.list_objects_v2(Bucket=bucket, Prefix="out/")
    assert len(listed.get("Contents", [])) == FILES
    assert all(code is None for code in site.alive().values()), site.alive()
    # no secret of the store in any node's environment or data volume's registration
    for name in ("node1", "node2"):
        environ = Path(f"/proc/{site.procs[name].pid}/environ").read_bytes()
        assert iam_key["secret_access_key"].encode() not in environ
        assert b"DMG_API_TOKEN" not in environ and b"GATEWAY_KEY" not in environ

    # and `docker compose down` (SIGTERM) stops every node cleanly
    codes = site.stop()
    assert codes["node1"] == 0 and codes["node2"] == 0, codes
