"""A real node: NodeRuntime starts a real Celery worker subprocess on real Redis.

The cloud is a real HTTP stub on 127.0.0.1 recording shard reports and heartbeats.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis as redis_lib
from celery import Celery

from dispatcher.placement import Placer
from dmg import registration as local_registration
from dmg.site.state import SiteState
from settings import Settings
from settings.celery import celery_config
from tests.workers.support import StubCloud, file_store, iter_lines, shard_spec, tree, wait_for, write_files
from workers.agent.node import NodeRuntime
from workers.names import COPY_SHARD, copy_task_id, node_queue
from workers.run.shard import ShardFailed

pytestmark = pytest.mark.integration

SHARD = "ar1-00000"
KIB = 1024


@dataclass
class Site:
    tmp: Path
    settings: Settings
    registration: local_registration.NodeRegistration
    state: SiteState
    cloud: StubCloud
    client: Celery
    runtimes: list[NodeRuntime] = field(default_factory=list)

    def runtime(self, *, concurrency: int, services: list[Any] | None = None) -> NodeRuntime:
        runtime = NodeRuntime(self.settings.replace(node_concurrency=concurrency), self.registration,
                              services=services or [], worker_log=self.tmp / "worker.log",
                              shutdown_timeout=30)
        self.runtimes.append(runtime)
        return runtime

    def wait_ready(self, runtime: NodeRuntime, limit: int) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if runtime.worker is None:
                return None  # run_forever() has not started it yet
            assert runtime.worker.poll() is None, "the worker died"
            load = self.state.worker_load("a")
            return load if load and load["limit"] == limit else None
        return wait_for(ready, timeout=60, what=f"the worker to run {limit} pool processes")

    def send(self, shard_id: str, attempt: int) -> Any:
        self.client.send_task(COPY_SHARD, args=[shard_id, attempt], queue=node_queue("a"),
                              task_id=copy_task_id(shard_id, attempt))
        return self.client.AsyncResult(copy_task_id(shard_id, attempt))


@pytest.fixture
def site(tmp_path: Path, redis_url: str, redis_client: redis_lib.Redis) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, redis_url=redis_url, node_name="a", heartbeat_interval=0.2,
                        offline_after=5.0)
    with StubCloud() as cloud:
        registration = local_registration.NodeRegistration(cloud_url=cloud.url, gateway="gw", node="a",
                                                           token="tok")
        local_registration.save(data_dir, registration)
        client = Celery("test-client", set_as_current=False)
        client.conf.update(celery_config(settings.replace(gateway="gw")))
        s = Site(tmp_path, settings, registration, SiteState(redis_client, "gw"), cloud, client)
        try:
            yield s
        finally:
            for runtime in s.runtimes:
                runtime.stop()
            client.close()
            print("\n".join(list(iter_lines(tmp_path / "worker.log"))[-60:]))


def pool_children(runtime: NodeRuntime) -> set[int]:
    assert runtime.worker is not None
    return {p.pid for p in psutil.Process(runtime.worker.pid).children()}


def make_shard(site: Site, files: dict[str, int], *,
               options: dict[str, Any] | None = None) -> tuple[Path, Path]:
    src, dst = site.tmp / "src", site.tmp / "dst"
    write_files(src / "in", files)
    spec = shard_spec(SHARD, file_store("src", src), "in", file_store("dst", dst), "out", options=options)
    site.state.save_shard(SHARD, spec)
    return src / "in", dst / "out"


def test_a_placed_shard_is_copied_by_the_nodes_worker(site: Site) -> None:
    runtime = site.runtime(concurrency=2)
    runtime.start()
    load = site.wait_ready(runtime, 2)
    assert set(load["pids"]) == pool_children(runtime)  # limit counts live pool processes
    wait_for(lambda: site.state.heartbeats().get("a", {}).get("limit") == 2, what="the agent's heartbeat")
    source, target = make_shard(site, {"a.bin": 300 * KIB, "deep/b.bin": 2 * 1024 * KIB, "empty": 0})
    site.state.push_pending(SHARD)

    placed = Placer(state=site.state, sender=site.client, cloud=None, holding=lambda: True,
                    max_queued=0).place_pending()

    assert [(p.shard_id, p.node, p.attempt) for p in placed] == [(SHARD, "a", 1)]
    result = site.client.AsyncResult(copy_task_id(SHARD, 1))
    assert result.get(timeout=60) == {"status": "succeeded", "node": "a", "attempt": 1, "files": 3,
                                      "bytes": 2 * 1024 * KIB + 300 * KIB}
    assert result.worker == "a@gw"  # result_extended records the worker's hostname
    assert tree(target) == tree(source)
    # Reports travel through the outbox (the agent's sender): they arrive after the result.
    # A shard done within a second sends only its final report.
    statuses = wait_for(lambda: (s := site.cloud.statuses(SHARD)) and s[-1][0] == "succeeded" and s,
                        what="the final report at the cloud")
    assert statuses in ([("succeeded", 1, "a")], [("running", 1, "a"), ("succeeded", 1, "a")])
    assert site.state.running("a") == set()
    assert site.cloud.heartbeats and site.cloud.heartbeats[-1]["node"] == "a"


def test_a_stale_attempt_sent_to_the_worker_is_skipped(site: Site) -> None:
    runtime = site.runtime(concurrency=1)
    runtime.start()
    site.wait_ready(runtime, 1)
    _source, target = make_shard(site, {"a.bin": 10 * KIB})
    site.state.new_attempt(SHARD, "a")
    site.state.new_attempt(SHARD, "a")

    assert site.send(SHARD, 1).get(timeout=60)["status"] == "stale"
    assert not target.exists()
    assert site.cloud.statuses(SHARD) == []


def test_a_failed_shard_is_a_failed_task_with_the_error(site: Site) -> None:
    runtime = site.runtime(concurrency=1)
    runtime.start()
    site.wait_ready(runtime, 1)
    make_shard(site, {"a.bin": 10 * KIB})
    (site.tmp / "src" / "in" / "a.bin").unlink()  # gone between planning and copying
    result = site.send(SHARD, site.state.new_attempt(SHARD, "a"))

    with pytest.raises(ShardFailed, match=r"shard ar1-00000 attempt 1 failed on a: 1 of 1 files failed"):
        result.get(timeout=60)
    assert result.state == "FAILURE"
    statuses = wait_for(lambda: (s := site.cloud.statuses(SHARD)) and s[-1][0] == "failed" and s,
                        what="the final report at the cloud")
    assert statuses in ([("failed", 1, "a")], [("running", 1, "a"), ("failed", 1, "a")])
    assert "a.bin" in site.cloud.reports[-1][1]["error"]


def test_a_killed_pool_process_reruns_its_shard_on_the_same_node(site: Site) -> None:
    runtime = site.runtime(concurrency=1)
    runtime.start()
    site.wait_ready(runtime, 1)
    # About 2.5 s per run: no file is committed yet when the running report (held 1 s)
    # lands and the process is killed, whether the files are copied together or one after
    # the other, and the second run is long enough to report running too.
    source, target = make_shard(site, {"a.bin": 512 * KIB, "b.bin": 128 * KIB},
                                options={"bandwidth": 256 * KIB})
    attempt = site.state.new_attempt(SHARD, "a")
    result = site.send(SHARD, attempt)
    wait_for(lambda: site.cloud.statuses(SHARD) == [("running", 1, "a")], what="the shard to run")
    (victim,) = pool_children(runtime)

    psutil.Process(victim).send_signal(signal.SIGKILL)

    assert result.get(timeout=60)["status"] == "succeeded"
    assert tree(target) == tree(source)
    wait_for(lambda: site.cloud.statuses(SHARD) == [("running", 1, "a"), ("running", 1, "a"),
                                                    ("succeeded", 1, "a")], what="the reports of both runs")
    assert victim not in pool_children(runtime)
    assert site.state.running("a") == set()


def test_flower_s_view_gets_every_task_s_events(site: Site) -> None:
    """Given an event receiver on the broker (what Flower runs), when the node's worker runs
    several shards, then every task's received, started and succeeded events reach it (the
    worker publishes them in batches), with the task's name and arguments."""
    runtime = site.runtime(concurrency=2)
    runtime.start()
    site.wait_ready(runtime, 2)
    events = site.client.events.State()
    stop = threading.Event()

    def capture() -> None:
        with site.client.connection_for_read() as conn:
            receiver = site.client.events.Receiver(conn, handlers={"*": events.event})
            receiver.should_stop = False
            for _ in receiver.consume(limit=None, timeout=None, wakeup=False):
                if stop.is_set():
                    break

    watcher = threading.Thread(target=capture, daemon=True)
    watcher.start()
    try:
        wait_for(lambda: "a@gw" in events.workers, timeout=30, what="the worker's heartbeat event")
        shards = [f"ar1-{i:05d}" for i in range(6)]
        src = site.tmp / "src"
        write_files(src / "in", {"a.bin": KIB})
        for shard_id in shards:
            spec = shard_spec(shard_id, file_store("src", src), "in", file_store("dst", site.tmp / "dst"),
                              f"out/{shard_id}")
            site.state.save_shard(shard_id, spec)
            site.send(shard_id, site.state.new_attempt(shard_id, "a"))

        def all_succeeded() -> bool:
            tasks = [events.tasks.get(copy_task_id(s, 1)) for s in shards]
            return all(t is not None and t.state == "SUCCESS" and t.received and t.started
                       for t in tasks)

        wait_for(all_succeeded, timeout=60, what="every task's events")
        task = events.tasks[copy_task_id(shards[0], 1)]
        assert task.name == COPY_SHARD and shards[0] in str(task.args) and task.worker.hostname == "a@gw"
    finally:
        stop.set()


class RecordingService:
    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events

    def start(self) -> None:
        self.events.append(f"start {self.name}")

    def stop(self) -> None:
        self.events.append(f"stop {self.name}")


def test_stopping_the_node_lets_the_running_shard_finish(site: Site) -> None:
    events: list[str] = []
    runtime = site.runtime(concurrency=1, services=[RecordingService("one", events),
                                                    RecordingService("two", events)])
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runtime.run_forever()))
    thread.start()
    try:
        site.wait_ready(runtime, 1)
        source, target = make_shard(site, {"a.bin": 256 * KIB}, options={"bandwidth": 256 * KIB})
        result = site.send(SHARD, site.state.new_attempt(SHARD, "a"))
        wait_for(lambda: site.cloud.statuses(SHARD), what="the shard to run")
        children = pool_children(runtime)
    finally:
        runtime.request_stop()
        thread.join(60)

    assert codes == [0]
    assert runtime.worker is not None and runtime.worker.returncode == 0
    assert result.get(timeout=10)["status"] == "succeeded"  # warm shutdown: finished, not killed
    assert tree(target) == tree(source)
    assert events == ["start one", "start two", "stop two", "stop one"]
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in children)


def test_the_node_stops_when_its_worker_dies(site: Site) -> None:
    events: list[str] = []
    runtime = site.runtime(concurrency=1, services=[RecordingService("one", events)])
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runtime.run_forever()))
    thread.start()
    try:
        site.wait_ready(runtime, 1)
        children = pool_children(runtime)
        assert runtime.worker is not None
        runtime.worker.send_signal(signal.SIGKILL)
    finally:
        thread.join(60)
        runtime.request_stop()

    assert codes and codes[0] != 0
    assert events == ["start one", "stop one"]
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in children), timeout=10,
             what="the orphaned pool processes to be killed")
