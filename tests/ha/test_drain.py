"""Drain and remove nodes with the real ``dmg`` executable while a run is in flight.

Given a three-node embedded site running a throttled pipeline (a folder to a file
store, CSV files to SQLite tables):

- ``dmg node remove node3`` is refused while node3 has work;
- ``dmg node remove node3 --force`` moves node3's shards to other nodes (new
  attempts; its own copies are fenced off);
- ``dmg node drain node2`` stops new placements on node2 and returns once it runs
  no shard; the cloud shows it draining (Upgrading);
- once the drained and removed nodes are stopped and removed, the gateway is back
  to a single Online node, the run has every file and row exactly once, and a new
  run goes through on the one node left.

Without a site: ``drain`` moves queued shards at once and times out with one clear
line while a shard still runs, ``undrain`` lifts the flag, and an unreachable
broker is one clear error.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis as redis_lib

from dispatcher.recovery import requeue_gone
from dmg.cli.demo import KIB
from dmg.cli.runview import shards_of
from dmg.embedded.faults import SiteUnderTest
from dmg.embedded.readiness import node_ready
from dmg.procs import free_port
from dmg.shards.status import STATE_DONE
from dmg.site.attempts import start_run
from dmg.site.state import SiteState
from tests.cli.conftest import DmgRunner, assert_one_line_error
from tests.ha.nodekit import (
    assert_once,
    cloud_shards,
    dispatcher_of,
    mixed_copy,
    run_ended,
    site_state,
    work_of,
)
from tests.ha.sitekit import (
    assert_copied_exactly,
    figure,
    ha_settings,
    node_rows,
    require_redis,
    running_site,
    throttled_copy,
    wait_for,
)
from workers.agent.drain import DrainField

pytestmark = pytest.mark.integration


def test_drain_and_remove_nodes_down_to_one_without_losing_work(tmp_path: Path) -> None:
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path / "site"), nodes=3, node_concurrency=1, flower=False,
                         startup_timeout=60)
    with running_site(site), site.client() as client, site_state(site) as state:
        dmg = DmgRunner(env={"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                             "DMG_API_TOKEN": site.settings.api_token,
                             "DMG_REDIS_URL": site.settings.redis_url}, cwd=tmp_path)
        # Tables of 3,000 rows at 24 KiB/s keep a table shard busy for seconds: shards are sized
        # by work now, so the 16 small files make one shard and node3 may hold a table shard
        # between the refused remove and the forced one.
        copy = mixed_copy(client, site, tmp_path, files=16, tables=4, rows=3000, bandwidth=24 * KIB,
                          name="drain")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: state.running("node2") and state.running("node3"), timeout=30,
                 what="node2 and node3 running shards")

        held = work_of(state, "node3")
        refused = dmg("node", "remove", "node3")
        assert_one_line_error(refused, contains="node3 has")
        assert "--force" in refused.stderr
        assert "node3" in node_rows(client, site)

        forced = dmg("node", "remove", "node3", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "node node3 removed from gateway site" in forced.stdout
        if "shard(s) moved to other nodes" not in forced.stdout:
            # node3's shards all ended between the refused remove and the forced one (a
            # table shard lasts a few seconds): the forced remove found nothing to move, and
            # every shard node3 held at the refusal is done, on node3 (the moving itself is
            # test_a_node_removed_again_while_it_runs_stops_taking_work_and_its_shards_move's)
            assert held and all((state.shard(s) or {}).get("state") == STATE_DONE for s in held), held
        assert work_of(state, "node3") == set()

        drained = dmg("node", "drain", "node2", "--timeout", "60", timeout=90)
        drained_at = time.time()
        assert drained.returncode == 0, drained.stderr
        assert "node node2 runs no shard" in drained.stdout
        assert work_of(state, "node2") == set()
        wait_for(lambda: node_rows(client, site)["node2"]["status"] == "Upgrading", timeout=10,
                 what="the cloud to show node2 draining")
        site.stop_node("node3")
        site.stop_node("node2")
        removed = dmg("node", "remove", "node2")
        assert removed.returncode == 0, removed.stderr

        wait_for(lambda: run_ended(client, run_id), timeout=120, what="the run to end")
        assert_once(client, run_id, copy)
        shards = cloud_shards(client, run_id).values()
        assert not [s for s in shards if s["node"] == "node2" and s["started_at"] > drained_at]
        assert {s["node"] for s in shards if s["ended_at"] > drained_at} <= {"node1"}

        # Back to a single node: the gateway is Online and work still goes through.
        assert [r["name"] for r in client.list_nodes(site.gateway)] == ["node1"]
        wait_for(lambda: client.gateway(site.gateway)["status"] == "Online", timeout=30,
                 what="the gateway Online with one node")
        again = mixed_copy(client, site, tmp_path / "again", files=8, tables=2, bandwidth=0, name="single")
        second = client.run_pipeline(again.pipeline)["id"]
        wait_for(lambda: run_ended(client, second), timeout=60, what="a run on the single node")
        assert_once(client, second, again)
        assert {s["node"] for s in cloud_shards(client, second).values()} == {"node1"}


def test_drain_moves_queued_shards_waits_for_running_ones_and_undrain_lifts_it(
        redis_url: str, redis_client: redis_lib.Redis, tmp_path: Path) -> None:
    state = SiteState(redis_client, "gw")
    for shard_id in ("running", "queued"):
        state.save_shard(shard_id, {"shard_id": shard_id})
    attempt = state.new_attempt("running", "n1")
    start_run(state, "running", attempt, "n1", runner="", alive=lambda _token: False)
    state.new_attempt("queued", "n1")
    dmg = DmgRunner(env={"DMG_DATA_DIR": str(tmp_path), "DMG_REDIS_URL": redis_url}, cwd=tmp_path)

    waited = dmg("node", "drain", "n1", "--gateway", "gw", "--timeout", "0.5")

    assert_one_line_error(waited, contains="node n1 still has 1 shard(s) after 0.5 s")
    assert "1 queued shard(s) moved to other nodes" in waited.stdout
    assert state.drained() == {"n1": "drain"} and state.pending() == ["queued"]
    state.mark_finished("running", attempt, "n1", ok=True)
    done = dmg("node", "drain", "n1", "--gateway", "gw")
    assert done.returncode == 0 and "node n1 runs no shard" in done.stdout

    undrained = dmg("node", "undrain", "n1", "--gateway", "gw")
    assert undrained.returncode == 0 and "node n1 takes work again" in undrained.stdout
    assert state.drained() == {}
    assert "was not drained" in dmg("node", "undrain", "n1", "--gateway", "gw").stdout


def test_drain_without_the_broker_is_one_clear_error(tmp_path: Path) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    dmg = DmgRunner(env={"DMG_DATA_DIR": str(tmp_path), "DMG_REDIS_URL": nobody}, cwd=tmp_path)
    result = dmg("node", "drain", "n1", "--gateway", "gw")
    assert_one_line_error(result, contains="cannot reach the site's broker")


def test_a_removed_node_registered_again_takes_work_once_the_cloud_accepts_it(
        redis_client: redis_lib.Redis) -> None:
    state = SiteState(redis_client, "gw")
    accepted = [False]
    state.set_drain("n1", "removed")
    field = DrainField(state, "n1", cloud_accepted=lambda: accepted[0])

    assert field() == {"draining": True}  # its token may be revoked: no work until the cloud says yes
    accepted[0] = True
    assert field() == {"draining": False} and state.drained() == {}

    running = DrainField(state, "n2", cloud_accepted=lambda: True)
    assert running() == {"draining": False}
    state.set_drain("n2", "removed")  # removed while it runs: it stays out
    assert running() == {"draining": True} and state.drained() == {"n2": "removed"}


def test_a_node_registered_again_then_removed_while_it_runs_stays_out(redis_client: redis_lib.Redis) -> None:
    state = SiteState(redis_client, "gw")
    state.set_drain("n1", "removed")  # removed while stopped
    field = DrainField(state, "n1", cloud_accepted=lambda: True)
    assert field() == {"draining": False} and state.drained() == {}  # registered again: takes work

    state.set_drain("n1", "removed")  # removed again while this process runs
    assert field() == {"draining": True}
    assert field() == {"draining": True} and state.drained() == {"n1": "removed"}


def test_a_node_whose_token_the_cloud_refuses_flags_itself_removed(redis_client: redis_lib.Redis) -> None:
    state = SiteState(redis_client, "gw")
    refused = [False]
    field = DrainField(state, "n1", cloud_accepted=lambda: True, cloud_refused=lambda: refused[0])
    assert field() == {"draining": False}
    refused[0] = True  # removed in the cloud while the broker could not be told
    assert field() == {"draining": True} and state.drained() == {"n1": "removed"}


def test_the_shards_of_a_removed_node_get_new_attempts_even_while_it_beats(
        redis_client: redis_lib.Redis) -> None:
    state = SiteState(redis_client, "gw")
    for shard_id in ("queued", "running", "elsewhere"):
        state.save_shard(shard_id, {"shard_id": shard_id})
    state.publish_heartbeat("gone", {"node": "gone"}, ttl=30)  # its process still beats
    state.new_attempt("queued", "gone")
    attempt = state.new_attempt("running", "gone")
    start_run(state, "running", attempt, "gone", runner="", alive=lambda _token: True)
    state.new_attempt("elsewhere", "n2")
    assert requeue_gone(state) == []  # nobody removed: nothing moves

    state.set_drain("gone", "removed")
    moved = requeue_gone(state)

    assert sorted(moved) == ["queued", "running"] and sorted(state.pending()) == ["queued", "running"]
    assert work_of(state, "gone") == set() and state.queued("n2") == {"elsewhere"}
    assert not state.is_current("running", attempt)  # its own copy is fenced off
    state.set_drain("n2")  # drained (not removed): its work stays
    assert requeue_gone(state) == [] and state.queued("n2") == {"elsewhere"}


def _placed_elsewhere(state: SiteState, shard_ids: list[str], gone: str, *, since: float,
                      timeout: float) -> float:
    """Wait until each shard has a newer attempt on another node (or ended); returns the seconds
    from ``since``."""
    before = {s: int((state.shard(s) or {}).get("attempt") or 0) for s in shard_ids}

    def moved() -> bool:
        shards = {s: state.shard(s) or {} for s in shard_ids}
        return all(sh.get("state") == "done" or (sh.get("node") not in ("", gone)
                                                 and int(sh.get("attempt") or 0) > before[s])
                   for s, sh in shards.items())

    wait_for(moved, timeout=timeout, what=f"the shards of {gone} placed elsewhere", interval=0.02)
    return time.monotonic() - since


def test_a_node_removed_again_while_it_runs_stops_taking_work_and_its_shards_move(tmp_path: Path) -> None:
    """Issue 8, item 3: remove node3 while it is stopped, register and start it again, then
    remove it while it runs: it takes no work any more (its flag holds over many beats) and
    its shards run elsewhere within seconds. Then node2 is removed in the cloud only (the
    broker not told): its token is refused, it flags itself removed and the dispatcher
    moves its shards too. The run succeeds on what is left."""
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path / "site"), nodes=3, node_concurrency=1, flower=False,
                         startup_timeout=60)
    with running_site(site), site.client() as client, site_state(site) as state:
        dmg = DmgRunner(env={"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                             "DMG_API_TOKEN": site.settings.api_token,
                             "DMG_REDIS_URL": site.settings.redis_url}, cwd=tmp_path)
        wait_for(lambda: dispatcher_of(state), timeout=20, what="a dispatcher")
        site.stop_node("node3")
        assert dmg("node", "remove", "node3").returncode == 0
        again = dmg("node", "register", "--key", site.gateway_keys["key1"], "--name", "node3")
        assert again.returncode == 0, again.stderr
        site.start_node("node3")
        wait_for(lambda: node_ready(node_rows(client, site).get("node3", {})) and not state.drained(),
                 timeout=30, what="node3 back and taking work")

        copy = throttled_copy(client, site, tmp_path, files=48, bandwidth=48 * KIB)
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: state.running("node3"), timeout=30, what="node3 running a shard")
        held = sorted(work_of(state, "node3"))
        removed = dmg("node", "remove", "node3", "--force")
        removed_at, since = time.time(), time.monotonic()
        assert removed.returncode == 0, removed.stderr
        figure(site, "removed_node_shards_placed_elsewhere_s",
               _placed_elsewhere(state, held, "node3", since=since, timeout=10))

        # node2 (not the dispatcher) is removed in the cloud only while it runs a shard.
        victim = "node2" if dispatcher_of(state) != "node2" else "node1"
        wait_for(lambda: state.running(victim), timeout=30, what=f"{victim} running a shard")
        held = sorted(work_of(state, victim))
        client.remove_node(site.gateway, victim)
        since = time.monotonic()
        placed = _placed_elsewhere(state, held, victim, since=since, timeout=10)
        wait_for(lambda: state.drained().get(victim) == "removed", timeout=10,
                 what=f"{victim} to flag itself removed")
        figure(site, "cloud_removed_node_shards_placed_elsewhere_s", placed)

        wait_for(lambda: run_ended(client, run_id), timeout=120, what="the run to end")
        run = assert_copied_exactly(client, run_id, copy)
        assert state.drained() == {"node3": "removed", victim: "removed"}  # the flags held
        late = [s for s in shards_of(run) if s["node"] == "node3" and (s["started_at"] or 0) > removed_at]
        assert late == [], late
        log = site.log_path("node3").read_text(errors="replace")
        assert log.count("registered again after its removal") == 1
