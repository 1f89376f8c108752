"""`dmg up` supervises its site: a process that dies is reported and started again
while the rest keeps running; only SIGTERM/Ctrl-C stops the site.

Each test runs the real ``dmg up`` as a subprocess, kills one of its processes by the pid
it printed (SIGKILL), and checks what a user sees: the report on stderr, ``dmg node list``,
a run through the site, and that SIGTERM leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis as redis_lib

from dmg.cli.demo import compare_trees, generate_tree
from settings import Settings
from tests.cli.conftest import DMG, DmgRunner, clean_environ
from tests.cli.test_site import alive, site_settings
from tests.conftest import require
from tests.ha.sitekit import require_redis, wait_for
from tests.waiting import holds_for

pytestmark = pytest.mark.integration


class Up:
    """A running ``dmg up`` and what it printed."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        require(DMG.exists(), f"{DMG} is not installed")
        require_redis()
        self.settings: Settings = site_settings(tmp_path / "up")
        env = clean_environ(DMG_DATA_DIR=str(self.settings.data_dir), DMG_REDIS_URL=self.settings.redis_url,
                            DMG_CLOUD_BIND=self.settings.cloud_bind, DMG_HEARTBEAT_INTERVAL="0.5",
                            DMG_OFFLINE_AFTER="3", DMG_LEASE_TTL="2", DMG_CLAIM_WAIT="1",
                            DMG_SHARD_MAX_FILES="4", DMG_LOG_LEVEL="WARNING")
        self.out = tmp_path / "up.out"
        with open(self.out, "wb") as fh:
            self.proc = subprocess.Popen([str(DMG), "up", "--no-flower", "--concurrency", "1", *args],
                                         stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.dmg = DmgRunner(env={"DMG_DATA_DIR": str(self.settings.data_dir)}, cwd=tmp_path)
        self.seen: set[int] = set()  # every process of the site seen so far
        wait_for(self._started, timeout=120, what="dmg up to print 'Ctrl-C stops the site'")
        self.dmg.env["DMG_CLOUD_URL"] = re.findall(r"DMG_CLOUD_URL=(\S+)", self.text())[0]
        self.dmg.env["DMG_REDIS_URL"] = re.findall(r"DMG_REDIS_URL=(\S+)", self.text())[0]
        self.pids = {name: int(pid) for name, pid in
                     re.findall(r"(\w+) (\d+)", re.findall(r"pids: +(.*)", self.text())[0])}

    def _started(self) -> bool:
        assert self.proc.poll() is None, self.text()
        return "Ctrl-C stops the site" in self.text()

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def family(self) -> list[int]:
        """Every live descendant of ``dmg up`` (remembered for the final check)."""
        pids = [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        self.seen.update(pids)
        return pids

    def node_family(self, name: str) -> list[int]:
        """The node's ``dmg node start`` and its worker session (pool included)."""
        top = psutil.Process(self.pids[name])
        found = [top.pid, *(p.pid for p in top.children(recursive=True))]
        self.seen.update(found)
        return found

    def restarted_pid(self, name: str) -> int:
        found = re.findall(rf"restarted {name} \(pid (\d+)\)", self.text())
        return int(found[-1]) if found else 0

    def nodes(self) -> dict[str, str]:
        """``dmg node list``: status by node name ({} while the cloud does not answer)."""
        listed = self.dmg("node", "list", "--gateway", "site", "--json")
        if listed.returncode != 0:
            return {}
        return {n["name"]: n["status"] for n in json.loads(listed.stdout)}

    def sigterm(self) -> None:
        """SIGTERM ``dmg up``: exit 0, and nothing it ever started is left running."""
        self.family()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=120) == 0, self.text()
        assert "stopped: nothing left running" in self.text()
        assert "Traceback" not in self.text()
        assert alive(sorted(self.seen | set(self.pids.values()))) == []

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        alive_left = alive(sorted(self.seen))
        for pid in alive_left:  # only processes this test's site started
            psutil.Process(pid).kill()


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[type[Up]]:
    started: list[Up] = []

    class Tracked(Up):
        def __init__(self, *args: str) -> None:
            super().__init__(tmp_path, *args)
            started.append(self)

    yield Tracked
    for up in started:
        up.close()


def run_a_copy(up: Up, root: Path) -> None:
    """A file-to-file pipeline of 12 files through the site succeeds, byte for byte."""
    source, sink = root / "source", root / "sink"
    generate_tree(source, small_files=12, large_files=0)
    sink.mkdir()
    (root / "src.json").write_text(json.dumps({"name": "src", "type": "file", "location": str(source)}))
    (root / "dst.json").write_text(json.dumps({"name": "dst", "type": "file", "location": str(sink)}))
    (root / "p.json").write_text(json.dumps({"name": "copy", "gateway": "site", "activities": [
        {"name": "folder", "source": {"store": "src", "path": ""}, "sink": {"store": "dst", "path": ""}}]}))
    for args in (("store", "add", str(root / "src.json")), ("store", "add", str(root / "dst.json")),
                 ("pipeline", "create", str(root / "p.json"))):
        done = up.dmg(*args)
        assert done.returncode == 0, done.stderr
    ran = up.dmg("pipeline", "run", "copy", "--wait", "--timeout", "90", timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert compare_trees(source, sink).matches


def test_a_killed_node_is_reported_and_restarted_while_the_site_runs(start_up: type[Up],
                                                                     tmp_path: Path) -> None:
    up = start_up("--nodes", "3")
    assert set(up.pids) >= {"redis", "cloud", "node1", "node2", "node3"}
    assert f"kill -9 {up.pids['node3']}" in up.text()  # the failover to try, printed
    victims = wait_for(lambda: len(up.node_family("node3")) >= 3 and up.node_family("node3"),
                       timeout=30, what="node3's worker and pool")
    up.family()

    os.kill(up.pids["node3"], signal.SIGKILL)

    wait_for(lambda: up.restarted_pid("node3"), timeout=30, what="dmg up to restart node3")
    text = up.text()
    assert "error: node3 stopped unexpectedly (killed by SIGKILL); restarting it in 1 s" in text
    assert f"log {up.settings.data_dir / 'logs' / 'node3.log'}" in text
    assert alive(victims) == []  # its orphaned Celery worker and pool were killed too

    # killed again at once: reported again, and the back-off doubles
    first_restart = up.restarted_pid("node3")
    up.seen.add(first_restart)
    os.kill(first_restart, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: up.restarted_pid("node3") != first_restart, timeout=30, what="a second restart")
    assert "error: node3 stopped unexpectedly (killed by SIGKILL); restarting it in 2 s" in up.text()
    up.pids["node3"] = up.restarted_pid("node3")
    wait_for(lambda: up.nodes() == {"node1": "Online", "node2": "Online", "node3": "Online"},
             timeout=60, what="every node Online again")
    run_a_copy(up, tmp_path / "copy")

    # well after the fault: the same processes, nothing else died or restarted
    time.sleep(max(0.0, 30 - (time.monotonic() - killed_at)))
    up.family()
    assert up.proc.poll() is None, up.text()
    assert sorted(alive(list(up.pids.values()))) == sorted(up.pids.values())
    assert up.text().count("stopped unexpectedly") == 2, up.text()
    assert up.nodes() == {"node1": "Online", "node2": "Online", "node3": "Online"}
    up.sigterm()


def test_no_restart_leaves_the_dead_node_down_and_the_rest_running(start_up: type[Up],
                                                                   tmp_path: Path) -> None:
    up = start_up("--nodes", "2", "--no-restart")
    victims = wait_for(lambda: len(up.node_family("node2")) >= 3 and up.node_family("node2"),
                       timeout=30, what="node2's worker and pool")
    up.family()

    os.kill(up.pids["node2"], signal.SIGKILL)

    wait_for(lambda: "error: node2" in up.text(), timeout=30, what="dmg up to report node2")
    assert ("error: node2 stopped unexpectedly (killed by SIGKILL); left down (--no-restart)"
            in up.text())
    wait_for(lambda: up.nodes() == {"node1": "Online", "node2": "Offline"}, timeout=30,
             what="node2 Offline, node1 Online")
    assert alive(victims) == []
    run_a_copy(up, tmp_path / "copy")
    assert up.proc.poll() is None, up.text()
    assert "restarted" not in up.text()
    del up.pids["node2"]
    assert sorted(alive(list(up.pids.values()))) == sorted(up.pids.values())
    up.sigterm()


def test_redis_and_the_cloud_are_restarted_with_their_data(start_up: type[Up], tmp_path: Path) -> None:
    up = start_up("--nodes", "1")
    up.family()
    password = (up.settings.data_dir / "redis-password").read_text().strip()
    broker = redis_lib.Redis.from_url(up.dmg.env["DMG_REDIS_URL"], password=password)
    broker.set("test-up-kept", "yes")
    time.sleep(1.5)  # appendfsync everysec: on disk in the AOF now

    os.kill(up.pids["redis"], signal.SIGKILL)
    os.kill(up.pids["cloud"], signal.SIGKILL)

    wait_for(lambda: up.restarted_pid("redis") and up.restarted_pid("cloud"), timeout=60,
             what="dmg up to restart redis and the cloud")
    assert "error: redis stopped unexpectedly (killed by SIGKILL)" in up.text()
    assert "error: cloud stopped unexpectedly (killed by SIGKILL)" in up.text()
    assert broker.get("test-up-kept") == b"yes"  # same port, same AOF
    broker.close()
    up.pids.update(redis=up.restarted_pid("redis"), cloud=up.restarted_pid("cloud"))
    wait_for(lambda: up.nodes() == {"node1": "Online"}, timeout=60, what="node1 Online again")
    run_a_copy(up, tmp_path / "copy")
    assert up.proc.poll() is None, up.text()
    up.sigterm()


def test_up_tls_runs_an_encrypted_site_that_survives_a_redis_restart(start_up: type[Up],
                                                                     tmp_path: Path) -> None:
    up = start_up("--nodes", "1", "--tls")
    assert up.dmg.env["DMG_CLOUD_URL"].startswith("https://"), up.text()
    assert up.dmg.env["DMG_REDIS_URL"].startswith("rediss://"), up.text()
    ca = re.findall(r"DMG_CLOUD_CA=(\S+)", up.text())[0]
    untrusted = up.dmg("gateway", "show", "site")
    assert untrusted.returncode == 1 and untrusted.stderr.count("\n") == 1, untrusted.stderr
    assert "not signed by a CA this client trusts" in untrusted.stderr, untrusted.stderr
    up.dmg.env["DMG_CLOUD_CA"] = ca
    shown = up.dmg("gateway", "show", "site")
    assert shown.returncode == 0 and "encryption: tls" in shown.stdout, shown.stdout + shown.stderr
    wait_for(lambda: up.nodes() == {"node1": "Online"}, timeout=30, what="node1 Online over TLS")
    node = psutil.Process(up.pids["node1"])
    lives = [node, *(c for c in node.children() if "celery" in " ".join(c.cmdline()))]
    assert len(lives) == 2, lives  # `dmg node start` and its Celery worker

    os.kill(up.pids["redis"], signal.SIGKILL)  # back on the same TLS port, same password and AOF
    killed = time.monotonic()
    wait_for(lambda: up.restarted_pid("redis"), timeout=60, what="dmg up to restart redis")
    up.pids["redis"] = up.restarted_pid("redis")
    wait_for(lambda: up.nodes() == {"node1": "Online"}, timeout=60, what="node1 Online again over TLS")
    run_a_copy(up, tmp_path / "copy")
    # the second-order effect: kombu's workers used to die a while after a Redis restart
    def all_alive() -> None:
        assert all(p.is_running() for p in lives), (lives, up.text())

    holds_for(all_alive, seconds=60 - (time.monotonic() - killed), interval=1)
    assert up.nodes() == {"node1": "Online"}
    assert "restarted node1" not in up.text(), up.text()  # the node rode the restart out
    up.sigterm()
