"""A real node runs packed messages (``dmg.copy_shards``, dispatcher.packing): several small
shards carried by one Celery message, each with its own attempt, fencing, reports and end.

Real Celery worker subprocess (NodeRuntime), real Redis, the cloud a real HTTP stub."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from dispatcher.messages import ShardMessages
from dispatcher.placement import Placer
from dmg.attempt_ends import CANCELLED_REASON
from tests.workers.support import file_store, shard_spec, tree, wait_for, write_files
from tests.workers.test_node_runtime import Site, pool_children, site  # noqa: F401
from workers.names import COPY_SHARDS, MAX_CARRIED, PACKED_CAPABILITY, node_queue, packed_task_id

pytestmark = pytest.mark.integration

KIB = 1024


def add_shard(s: Site, shard_id: str, files: dict[str, int], *,
              options: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """A planned shard of its own source and sink directories; -> (source, sink) dirs."""
    src, dst = s.tmp / "src" / shard_id, s.tmp / "dst" / shard_id
    write_files(src, files)
    s.state.save_shard(shard_id, shard_spec(shard_id, file_store("src", s.tmp / "src"), shard_id,
                                            file_store("dst", s.tmp / "dst"), shard_id, options=options))
    return src, dst


def send_packed(s: Site, shards: list[tuple[str, int]]) -> Any:
    task_id = packed_task_id(shards)
    s.client.send_task(COPY_SHARDS, args=[[list(x) for x in shards]], queue=node_queue("a"), task_id=task_id)
    return s.client.AsyncResult(task_id)


def final(s: Site, shard_id: str) -> list[tuple[str, int, str]]:
    """The shard's final reports at the cloud (running ones left out)."""
    return [x for x in s.cloud.statuses(shard_id) if x[0] != "running"]


def test_each_shard_of_a_packed_message_ends_once_whatever_the_others_do(site: Site) -> None:  # noqa: F811
    runtime = site.runtime(concurrency=1)
    runtime.start()
    site.wait_ready(runtime, 1)
    ok1 = add_shard(site, "ok-00000", {"a.bin": 10 * KIB, "b.bin": 0})
    add_shard(site, "gone-00000", {"a.bin": 10 * KIB})
    (site.tmp / "src" / "gone-00000" / "a.bin").unlink()  # gone between planning and copying
    _src, stale_sink = add_shard(site, "stale-00000", {"a.bin": 10 * KIB})
    _src, cancelled_sink = add_shard(site, "cancelled-00000", {"a.bin": 10 * KIB})
    add_shard(site, "cancelled-00001", {"a.bin": 10 * KIB})
    ok2 = add_shard(site, "ok2-00000", {"c.bin": 5 * KIB})
    order = ["ok-00000", "gone-00000", "stale-00000", "cancelled-00000", "cancelled-00001", "ok2-00000"]
    for shard_id in order:
        assert site.state.new_attempt(shard_id, "a") == 1
    assert site.state.new_attempt("stale-00000", "a") == 2  # fenced off: attempt 1 is stale
    site.state.cancel("cancelled")

    result = send_packed(site, [(shard_id, 1) for shard_id in order])

    outcomes = result.get(timeout=60)
    assert [(o["shard_id"], o["status"]) for o in outcomes] == [
        ("ok-00000", "succeeded"), ("gone-00000", "failed"), ("stale-00000", "stale"),
        ("cancelled-00000", "cancelled"), ("cancelled-00001", "cancelled"), ("ok2-00000", "succeeded")]
    assert result.state == "SUCCESS"  # the carrier itself did its job: every shard ended
    assert tree(ok1[1]) == tree(ok1[0]) and tree(ok2[1]) == tree(ok2[0])
    assert not stale_sink.exists() and not cancelled_sink.exists()
    ends = [("ok-00000", "succeeded"), ("gone-00000", "failed"), ("cancelled-00000", "failed"),
            ("cancelled-00001", "failed"), ("ok2-00000", "succeeded")]
    for shard_id, status in ends:
        wait_for(lambda shard_id=shard_id: final(site, shard_id), what=f"the final report of {shard_id}")
        assert final(site, shard_id) == [(status, 1, "a")]
    assert site.cloud.statuses("stale-00000") == []
    errors = {shard_id: r["error"] for shard_id, r in site.cloud.reports if r["status"] == "failed"}
    assert errors["cancelled-00000"] == errors["cancelled-00001"] == CANCELLED_REASON
    assert "a.bin" in errors["gone-00000"]
    assert site.state.running("a") == set() and site.state.queued("a") == {"stale-00000"}
    assert site.state.carried("a") == set()


def test_a_pool_process_killed_mid_message_loses_nothing_and_writes_nothing_twice(site: Site) -> None:  # noqa: F811
    runtime = site.runtime(concurrency=1)
    runtime.start()
    site.wait_ready(runtime, 1)
    wait_for(lambda: site.state.heartbeats().get("a", {}).get(PACKED_CAPABILITY) == MAX_CARRIED,
             what="the agent's heartbeat saying it takes packed messages")
    first = add_shard(site, "first-00000", {"a.bin": 4 * KIB})
    # About 2.5 s: killed while it runs (as tests/workers/test_node_runtime.py's killed shard),
    # by its run's limit set while it runs (a bandwidth option would make it not small).
    slow = add_shard(site, "slow-00000", {"a.bin": 512 * KIB, "b.bin": 128 * KIB})
    site.state.set_bandwidth("slow", 256 * KIB)
    last = add_shard(site, "last-00000", {"c.bin": 4 * KIB})
    order = ["first-00000", "slow-00000", "last-00000"]
    site.state.push_pending(*order)
    messages = ShardMessages.of(site.client)
    assert messages is not None
    # One free slot for three small shards: the dispatcher sends them in one message.
    placed = Placer(state=site.state, sender=site.client, cloud=None, holding=lambda: True, max_queued=0,
                    messages=messages, max_carried=MAX_CARRIED).place_pending()
    assert [(p.shard_id, p.attempt) for p in placed] == [(s, 1) for s in order]
    assert site.state.carried("a") == {"slow-00000", "last-00000"}
    wait_for(lambda: site.cloud.statuses("slow-00000") == [("running", 1, "a")], what="the slow shard to run")
    assert final(site, "first-00000") == [("succeeded", 1, "a")]
    first_file = os.stat(first[1] / "a.bin")
    (victim,) = pool_children(runtime)

    psutil.Process(victim).send_signal(signal.SIGKILL)

    # The message comes back (acks late, rejected on a lost worker) and runs again.
    result = site.client.AsyncResult(packed_task_id([(s, 1) for s in order]))
    outcomes = result.get(timeout=60)
    assert [(o["shard_id"], o["status"]) for o in outcomes] == [
        ("first-00000", "stale"), ("slow-00000", "succeeded"), ("last-00000", "succeeded")]
    for source, sink in (first, slow, last):
        assert tree(sink) == tree(source)
    again = os.stat(first[1] / "a.bin")
    assert (again.st_ino, again.st_mtime_ns) == (first_file.st_ino, first_file.st_mtime_ns)  # not rewritten
    wait_for(lambda: final(site, "last-00000") and final(site, "slow-00000"), what="the final reports")
    assert final(site, "first-00000") == [("succeeded", 1, "a")]
    assert site.cloud.statuses("slow-00000") == [("running", 1, "a"), ("running", 1, "a"),
                                                 ("succeeded", 1, "a")]
    assert final(site, "last-00000") == [("succeeded", 1, "a")]
    assert site.state.shard("slow-00000")["deliveries"] in (2, "2")
    assert victim not in pool_children(runtime)
    assert site.state.running("a") == set() and site.state.queued("a") == set()
    assert site.state.carried("a") == set()
