"""A dispatcher SIGKILLed between a plan and its placement, or in the middle of a placement
round, loses no shard and leaves none runnable twice (real processes, a real Redis, real
Celery messages).

Given a dispatcher process (lease epoch 1) that planned 40 one-file shards, when it is
killed before it placed any, or after it placed some (each placement is one script: the
attempt, its report, its pending entry and its message together), and the next dispatcher
(epoch 2) takes over and places what is left, then every shard has exactly one message for
its current attempt, on the queue of the node that attempt is on, with its ``placed`` report
in the report list; any older message carries a fenced attempt; the plan was recorded once.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery

from dispatcher.messages import ShardMessages
from dispatcher.placement import Placer
from dispatcher.recovery import take_over
from dispatcher.reports import PlacementOutbox
from dmg.site.state import SiteState
from settings.celery import broker_key_prefix
from tests.sitekit import beat
from tests.workers.support import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHARDS = 40
NODES = ("a", "b")


def copy_messages(client: redis_lib.Redis) -> list[tuple[str, str, int, int]]:
    """(node, shard id, attempt, epoch) of every copy message waiting on the nodes' queues."""
    found = []
    for node in NODES:
        for raw in client.lrange(f"{broker_key_prefix('gw')}node.{node}", 0, -1):
            args, kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
            found.append((node, args[0], args[1], kwargs.get("epoch")))
    return found


def placed_reports(state: SiteState) -> tuple[set[tuple[str, int, str]], int]:
    """((shard id, attempt, node) of every placed report, plan entries of ar1) in the list."""
    reports, plans = set(), 0
    for raw in state.redis.lrange(state.keys.placements, 0, -1):
        entry: dict[str, Any] = json.loads(raw)
        if "plan" in entry:
            plans += entry["plan"]["activity_run_id"] == "ar1"
        else:
            reports.add((entry["shard_id"], entry["report"]["attempt"], entry["report"]["node"]))
    return reports, plans


@pytest.mark.parametrize("mode", ["plan", "place"])
def test_a_killed_dispatcher_loses_no_shard_and_duplicates_none(
        mode: str, tmp_path: Path, redis_url: str, state: SiteState, sender: Celery,
        redis_client: redis_lib.Redis) -> None:
    # Given two live nodes with room, 40 files, and a dispatcher process with the lease (epoch 1)
    for node in NODES:
        beat(state, node, 1000)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(SHARDS):
        (src / f"f{i:03d}").write_bytes(b"x")
    state.redis.set(state.keys.epoch, 1)
    child = subprocess.Popen([sys.executable, "-m", "tests.ha.placement_child", redis_url, "gw", "1",
                              str(src), mode], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "planned"
        # When it is killed: right after its plan, or with some of its shards placed
        if mode == "place":
            wait_for(lambda: len(copy_messages(redis_client)) >= 10, timeout=30, what="some placements")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    killed_with = len(copy_messages(redis_client))
    assert (killed_with == 0) if mode == "plan" else (0 < killed_with < SHARDS)

    # and the next dispatcher takes over (epoch 2) and places what is left
    state.redis.set(state.keys.epoch, 2)
    placer = Placer(state=state, sender=sender, cloud=PlacementOutbox(state), holding=lambda: True,
                    max_queued=10_000, epoch=lambda: 2, messages=ShardMessages.of(sender))
    take_over(state, placer, epoch=2)
    wait_for(lambda: not placer.place_pending() and not state.pending(), timeout=30,
             what="every pending shard placed")

    # Then every shard has one message for its current attempt, on its node, reported placed
    messages = copy_messages(redis_client)
    reports, plans = placed_reports(state)
    assert plans == 1
    for i in range(SHARDS):
        shard_id = f"ar1-{i:05d}"
        shard = state.shard(shard_id)
        assert shard is not None and shard["state"] == "queued", shard_id
        current = [m for m in messages if m[1] == shard_id and m[2] == shard["attempt"]]
        assert current == [(shard["node"], shard_id, shard["attempt"], shard["epoch"])]
        assert (shard_id, shard["attempt"], shard["node"]) in reports
        older = [m for m in messages if m[1] == shard_id and m[2] != shard["attempt"]]
        assert all(not state.is_current(shard_id, m[2]) for m in older)  # fenced: never commits
    assert len(messages) <= SHARDS + killed_with  # at most one re-issue of each placed shard
