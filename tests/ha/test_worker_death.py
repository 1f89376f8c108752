"""A worker's pool process dies (SIGKILL, as the OOM killer does) while it copies a shard.

Given a one-node embedded site allowing two worker deaths per shard
(``DMG_SHARD_MAX_WORKER_DEATHS=2``), when the pool process that runs a throttled
shard is killed once, then the same attempt runs again on the same node (Celery
requeues the message: acks late, reject on worker lost) and the run succeeds with
every file once. When the process running a shard is killed every time it starts,
the shard fails after two deaths with an error saying so, instead of looping
forever, and leaves no staging file behind.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dmg.cli.demo import KIB, compare_trees
from dmg.cli.runview import shards_of
from dmg.embedded.site import EmbeddedSite
from dmg.shards.status import STATE_RUNNING
from dmg.site.attempts import runner_pid
from dmg.site.state import SiteState
from tests.ha.nodekit import run_ended, site_state
from tests.ha.sitekit import (
    assert_copied_exactly,
    module_site,
    throttled_copy,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSite]:
    yield from module_site(tmp_path_factory, nodes=1, node_concurrency=1, shard_max_worker_deaths=2)


def running_pid(state: SiteState, shard_id: str, *, not_pid: int | None = None) -> int:
    """The pid of the pool process running ``shard_id`` now (0: none yet)."""
    shard = state.shard(shard_id) or {}
    pid = runner_pid(str(shard.get("runner") or ""))
    if shard.get("state") != STATE_RUNNING or pid is None or pid == not_pid or not psutil.pid_exists(pid):
        return 0
    return pid


def only_shard(site: EmbeddedSite, run_id: str) -> str:
    """The id of the run's one shard ("" until it is planned)."""
    with site.client() as client:
        shards = shards_of(client.run(run_id))
    assert len(shards) <= 1, shards
    return str(shards[0]["id"]) if shards else ""


def test_a_killed_pool_process_reruns_the_same_attempt_on_the_same_node(site: EmbeddedSite,
                                                                      tmp_path: Path) -> None:
    with site.client() as client, site_state(site) as state:
        copy = throttled_copy(client, site, tmp_path, files=4, bandwidth=16 * KIB, name="once")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        shard_id = wait_for(lambda: only_shard(site, run_id), timeout=30,
                            what="the run planned")
        victim = wait_for(lambda: running_pid(state, shard_id), timeout=30, what="the shard running")

        psutil.Process(victim).send_signal(signal.SIGKILL)
        wait_for(lambda: running_pid(state, shard_id, not_pid=victim), timeout=30,
                 what="the shard running again in a new pool process")
        wait_for(lambda: run_ended(client, run_id), timeout=60, what="the run to end")

        run = assert_copied_exactly(client, run_id, copy)
        (shard,) = shards_of(run)
        assert (shard["node"], shard["attempt"]) == ("node1", 1)  # same node, same attempt
        stored = state.shard(shard_id)
        assert stored is not None and stored["deliveries"] == 2


def test_a_shard_that_keeps_killing_its_worker_fails_with_a_clear_error(site: EmbeddedSite,
                                                                       tmp_path: Path) -> None:
    with site.client() as client, site_state(site) as state:
        copy = throttled_copy(client, site, tmp_path, files=4, bandwidth=16 * KIB, name="again-and-again")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        shard_id = wait_for(lambda: only_shard(site, run_id), timeout=30,
                            what="the run planned")
        killed: list[int] = []
        for _death in range(2):
            pid = wait_for(lambda: running_pid(state, shard_id, not_pid=killed[-1] if killed else None),
                           timeout=30, what="the shard running")
            psutil.Process(pid).send_signal(signal.SIGKILL)
            killed.append(pid)
        wait_for(lambda: run_ended(client, run_id), timeout=60, what="the run to end")

        run = client.run(run_id)
        assert run["status"] == "Failed"
        (shard,) = shards_of(run)
        assert shard["status"] == "failed" and shard["node"] == "node1"
        assert "the shard killed its worker process 2 times" in shard["error"]
        assert "DMG_SHARD_MAX_WORKER_DEATHS" in shard["error"]
        stored = state.shard(shard_id)
        assert stored is not None and stored["deliveries"] == 3 and stored["state"] == "failed"
        diff = compare_trees(copy.source, copy.sink)
        assert not diff.extra, diff.describe()  # no staging left by the killed processes
