"""A whole embedded site on this machine: Redis, the cloud, two nodes, Flower.

Given an :class:`EmbeddedSite` with two nodes of one job each, when a file→file
pipeline of a generated folder runs through the real ``dmg`` executable, then the
target matches the source byte for byte, both nodes ran shards, and stopping the
site leaves no process running.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from dmg.cli.demo import KIB, compare_trees, generate_tree
from dmg.embedded.faults import SiteUnderTest
from dmg.embedded.redis import redis_binary
from dmg.embedded.site import EmbeddedSite
from dmg.errors import Conflict, Fatal
from dmg.procs import free_port
from settings import Settings
from tests.cli.conftest import DMG, DmgRunner, clean_environ
from tests.conftest import require
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def site_settings(data_dir: Path, **changes: object) -> Settings:
    """Free ports, short heartbeats and small shards, so the test is quick and spreads work."""
    return Settings(
        data_dir=data_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0",
        cloud_bind=f"127.0.0.1:{free_port()}", flower_port=free_port(), heartbeat_interval=0.5,
        offline_after=5.0, lease_ttl=3.0, claim_wait=2.0, shard_max_files=8, log_level="WARNING",
    ).replace(**changes)


def alive(pids: list[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSite]:
    """One site for the tests that only use it (each stops its own otherwise)."""
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    running = EmbeddedSite(site_settings(tmp_path_factory.mktemp("site")), nodes=2, node_concurrency=1,
                           startup_timeout=60)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def at_least(count: int, pids: list[int]) -> list[int] | None:
    """``pids`` once there are ``count`` of them, else None (not yet)."""
    return pids if len(pids) >= count else None


def test_two_nodes_copy_a_folder_byte_for_byte(site: EmbeddedSite, tmp_path: Path) -> None:
    source, sink = tmp_path / "source", tmp_path / "sink"
    generate_tree(source, small_files=60, large_files=2, large_size=(1024 * KIB, 2048 * KIB))
    sink.mkdir()
    dmg = DmgRunner(env={"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                         "DMG_API_TOKEN": site.settings.api_token}, cwd=tmp_path)
    (tmp_path / "src.json").write_text(json.dumps({"name": "src", "type": "file", "location": str(source)}))
    (tmp_path / "dst.json").write_text(json.dumps({"name": "dst", "type": "file", "location": str(sink)}))
    (tmp_path / "p.json").write_text(json.dumps({"name": "copy", "gateway": site.gateway, "activities": [
        {"name": "folder", "source": {"store": "src", "path": ""}, "sink": {"store": "dst", "path": ""}}]}))
    for args in (("store", "add", "src.json"), ("store", "add", "dst.json"),
                 ("pipeline", "create", "p.json")):
        done = dmg(*args)
        assert done.returncode == 0, done.stderr

    ran = dmg("pipeline", "run", "copy", "--wait", "--timeout", "90", timeout=120)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "succeeded" in ran.stdout and "nodes used: node1, node2" in ran.stdout
    diff = compare_trees(source, sink)
    assert diff.matches, diff.describe()
    run_id = dmg.json("runs", "list")[0]["id"]
    run = dmg.json("runs", "show", run_id)
    shards = [s for a in run["activity_runs"] for s in a["shards"]]
    assert run["status"] == "Succeeded" and len(shards) >= 8
    assert {s["status"] for s in shards} == {"succeeded"}
    assert {s["node"] for s in shards} == {"node1", "node2"}
    assert sum(s["files"] for s in shards) == 62

    nodes = dmg.json("node", "list", "--gateway", site.gateway)
    assert sorted(n["name"] for n in nodes) == ["node1", "node2"]
    assert {n["status"] for n in nodes} == {"Online"}
    assert sorted(n["role"] for n in nodes) == ["dispatcher", "worker"]


def test_flower_asks_for_the_generated_password(site: EmbeddedSite) -> None:
    password_file = site.data_dir / "flower-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert httpx.get(site.flower_url + "api/workers", timeout=10).status_code == 401
    answer = httpx.get(site.flower_url + "healthcheck", auth=(site.flower_user, password), timeout=10)
    assert answer.status_code == 200


def test_flower_lists_each_shard_task_with_its_state_worker_and_result(site: EmbeddedSite,
                                                                      tmp_path: Path) -> None:
    """Given a run of a few files, then Flower's task list (built from the workers' task
    events) has every shard's task (its own, or the packed message carrying it) succeeded,
    on a node's worker, with the shard's result (workers.resultstore and workers.keptclient
    change nothing Flower shows)."""
    source, sink = tmp_path / "fsrc", tmp_path / "fdst"
    source.mkdir()
    sink.mkdir()
    for i in range(3):
        (source / f"f{i}").write_bytes(b"x" * i)
    with site.client() as client:
        client.add_store({"name": "flower-src", "type": "file", "location": str(source)})
        client.add_store({"name": "flower-dst", "type": "file", "location": str(sink)})
        client.create_pipeline({"name": "flower-copy", "gateway": site.gateway, "activities": [
            {"name": f"a{i}", "source": {"store": "flower-src", "path": f"f{i}"},
             "sink": {"store": "flower-dst", "path": f"f{i}"}} for i in range(3)]})
        run_id = client.run_pipeline("flower-copy")["id"]
        run = wait_for(lambda: (r := client.run(run_id))["status"] in ("Succeeded", "Failed") and r,
                       timeout=60, what="the run ended")
    assert run["status"] == "Succeeded"
    shards = [s for a in run["activity_runs"] for s in a["shards"]]
    password = (site.data_dir / "flower-password").read_text().strip()

    def flower_tasks() -> dict[str, dict] | None:
        # A shard goes alone (dmg.copy_shard) or, at backlog, with others in one packed
        # message (dmg.copy_shards, dispatcher.packing): Flower lists that message's task.
        mine: dict[str, dict] = {}
        for name in ("dmg.copy_shard", "dmg.copy_shards"):
            answer = httpx.get(site.flower_url + "api/tasks", params={"taskname": name},
                               auth=(site.flower_user, password), timeout=10)
            answer.raise_for_status()
            for task in answer.json().values():
                for shard in shards:
                    if task.get("state") == "SUCCESS" and shard["id"] in str(task.get("args")):
                        mine[shard["id"]] = task
        return mine if all(s["id"] in mine for s in shards) else None

    seen = wait_for(flower_tasks, timeout=30, what="every shard's task succeeded in Flower")
    for shard in shards:
        task = seen[shard["id"]]
        assert task["worker"] in (f"node1@{site.gateway}", f"node2@{site.gateway}")
        assert shard["id"] in task["args"] and "'status': 'succeeded'" in task["result"]


def test_a_second_site_on_the_same_data_dir_is_refused(site: EmbeddedSite) -> None:
    other = EmbeddedSite(site.settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"), nodes=1)
    with pytest.raises(Conflict, match="another embedded site"):
        other.start()
    assert site.dead_children() == []


def test_stop_leaves_nothing_running(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    running = SiteUnderTest(site_settings(tmp_path / "site"), nodes=2, node_concurrency=1, flower=True)
    try:
        running.start()
        # redis, cloud, flower, 2 nodes, each node's Celery worker and its pool child
        pids = wait_for(lambda: at_least(9, running.pids()), timeout=60, what="9 processes of the site")
    finally:
        running.stop()
    assert alive(pids) == []
    assert not (running.data_dir / "site.pids").exists()
    # every process stopped by its parent, none had to be hunted down afterwards
    assert not [r for r in caplog.records if "outlived" in r.getMessage()]


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_dmg_up_runs_until_stopped_and_leaves_nothing(tmp_path: Path, how: str) -> None:
    """`dmg up` stops everything on SIGTERM or Ctrl-C (exit 0); a process that dies does not
    stop it (tests/cli/test_up_supervisor.py)."""
    require(DMG.exists(), f"{DMG} is not installed")
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    settings = site_settings(tmp_path / "up")
    env = clean_environ(DMG_DATA_DIR=str(settings.data_dir), DMG_REDIS_URL=settings.redis_url,
                        DMG_CLOUD_BIND=settings.cloud_bind, DMG_FLOWER_PORT=str(settings.flower_port),
                        DMG_HEARTBEAT_INTERVAL="0.5", DMG_LOG_LEVEL="WARNING")
    out = tmp_path / "up.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([str(DMG), "up", "--nodes", "1", "--no-flower"], stdout=fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        def up_and_ready() -> bool:
            assert proc.poll() is None, out.read_text()
            return "Ctrl-C stops the site" in out.read_text()

        wait_for(up_and_ready, timeout=90, what="dmg up to say the site is up")
        text = out.read_text()
        assert f"API:        http://{settings.cloud_bind}/api/v1" in text
        assert "dmg node list --gateway site" in text
        # redis, cloud, the node, its Celery worker (a session of its own) and pool child
        up = psutil.Process(proc.pid)
        pids = wait_for(lambda: at_least(5, [p.pid for p in up.children(recursive=True)]),
                        timeout=90, what="5 processes under dmg up")

        proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
        assert proc.wait(timeout=90) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopped: nothing left running" in out.read_text()
    assert "Traceback" not in out.read_text()
    assert alive(pids) == []


def test_dmg_demo_copies_verifies_and_exits_zero(tmp_path: Path) -> None:
    require(DMG.exists(), f"{DMG} is not installed")
    settings = site_settings(tmp_path / "demo")
    env = {"DMG_DATA_DIR": str(settings.data_dir), "DMG_REDIS_URL": settings.redis_url,
           "DMG_CLOUD_BIND": settings.cloud_bind, "DMG_HEARTBEAT_INTERVAL": "0.5",
           "DMG_SHARD_MAX_FILES": "8", "DMG_LOG_LEVEL": "WARNING"}
    result = DmgRunner(env=env, cwd=tmp_path)("demo", "--nodes", "2", "--files", "30", "--large-files", "1",
                                              "--json", timeout=150)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["run"]["status"] == "Succeeded"
    assert body["verified"]["matches"] and body["verified"]["files"] == 31
    assert body["summary"]["files"] == 31 and body["summary"]["bytes"] == body["verified"]["bytes"]
    assert "stopped: nothing left running" in result.stderr
    assert not (settings.data_dir / "site.pids").exists()


def test_a_failed_start_stops_what_it_started(tmp_path: Path) -> None:
    """Given a startup deadline nothing can meet, start() raises one error and leaves nothing."""
    try:
        redis_binary()
    except Fatal as exc:
        require(False, str(exc))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    doomed = EmbeddedSite(site_settings(tmp_path / "site"), nodes=1, flower=False, startup_timeout=0.01)
    with pytest.raises(Fatal):
        doomed.start()
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert alive(sorted(after - before)) == []
    assert not (tmp_path / "site" / "site.pids").exists()


def test_leftovers_of_a_killed_site_are_reaped(tmp_path: Path) -> None:
    """Given site.pids from a site killed with SIGKILL, the next start kills those processes
    (and only those: a reused pid with another start time is left alone)."""
    data_dir = tmp_path / "site"
    data_dir.mkdir()
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (data_dir / "site.pids").write_text(json.dumps([
            {"pid": orphan.pid, "created": psutil.Process(orphan.pid).create_time()},
            {"pid": bystander.pid, "created": psutil.Process(bystander.pid).create_time() - 100}]))
        EmbeddedSite(site_settings(data_dir)).reap_leftovers()
        assert orphan.wait(timeout=10) != 0
        assert bystander.poll() is None
        assert not (data_dir / "site.pids").exists()
    finally:
        for proc in (orphan, bystander):
            proc.kill()
            proc.wait()
