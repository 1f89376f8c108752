"""A node's side of an upgrade (workers.agent.upgrade) against a real Redis, and the restart
(``restart_on_new_version``) in real processes.

Given a node with one shard running and one queued; when the cloud's answer asks for an
upgrade; then the node is flagged ``upgrade`` (placement skips it), the queued shard moves
back to pending at once, the running one is left to finish, and the node stops only once the
cloud has heard it took the request up and the shard ended, or the drain timeout passed.
Its next process clears the flag.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from dmg.site.attempts import STARTED, start_run
from dmg.site.state import DRAIN_UPGRADE, SiteState
from tests.dispatcher.test_placement import add_shards
from workers.agent.drain import DrainField
from workers.agent.upgrade import NodeUpgrade


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _node_with_work(state: SiteState) -> tuple[str, str]:
    running, queued = add_shards(state, 2)
    for shard_id in (running, queued):
        state.new_attempt(shard_id, "n1")
        state.drop_pending(shard_id)
    assert start_run(state, running, 1, "n1", runner="w", alive=lambda _t: False)[0] == STARTED
    return running, queued


def test_an_upgrade_drains_the_node_then_lets_it_stop(state: SiteState) -> None:
    running, queued = _node_with_work(state)
    answer: dict[str, Any] = {"status": "Online", "upgrade": False}
    ready: list[bool] = []
    clock = Clock()
    upgrade = NodeUpgrade(state, "n1", cloud_answer=lambda: answer, on_ready=lambda: ready.append(True),
                          drain_timeout=30, interval=1, clock=clock)

    upgrade.step()
    assert upgrade.fields() == {} and state.drained() == {}  # nothing asked

    answer["upgrade"] = True
    upgrade.step()
    assert state.drained() == {"n1": DRAIN_UPGRADE}
    assert upgrade.fields() == {"upgrading": True, "draining": True}
    assert state.pending() == [queued] and state.queued("n1") == set()  # moved at once
    assert state.running("n1") == {running}  # left to finish

    clock.now = 60.0
    upgrade.step()
    assert not ready  # the cloud has not heard yet that the node took it up

    answer["upgrade"] = False  # the answer to a beat saying "upgrading"
    clock.now = 10.0
    upgrade.step()
    assert not ready  # a shard still runs, within the drain timeout
    clock.now = 31.0
    upgrade.step()
    assert ready == [True] and upgrade.ready.is_set()  # the timeout passed: it stops anyway
    upgrade.step()
    assert ready == [True]  # once


def test_a_drained_node_stops_as_soon_as_nothing_runs(state: SiteState) -> None:
    answer = {"upgrade": True}
    ready: list[bool] = []
    upgrade = NodeUpgrade(state, "n1", cloud_answer=lambda: answer, on_ready=lambda: ready.append(True),
                          drain_timeout=300, interval=1, clock=Clock())
    upgrade.step()
    answer["upgrade"] = False
    upgrade.step()
    assert ready == [True]


def test_the_next_process_clears_the_upgrade_flag(state: SiteState) -> None:
    state.set_drain("n1", DRAIN_UPGRADE)
    field = DrainField(state, "n1", cloud_accepted=lambda: True)
    assert field() == {"draining": False}
    assert state.drained() == {}
    state.set_drain("n1", DRAIN_UPGRADE)  # this process's own upgrade, later: kept
    assert field() == {"draining": True}
    assert state.drained() == {"n1": DRAIN_UPGRADE}


def _restart(tmp_path: Path, command: str) -> subprocess.CompletedProcess[str]:
    """A process that calls ``restart_on_new_version(command)`` with a new command line that
    prints ``new process``."""
    script = tmp_path / "node.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from workers.agent.upgrade import restart_on_new_version
        restart_on_new_version({command!r}, argv=[sys.executable, "-c", "print('new process')"])
        print("returned")
    """))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])


def test_the_restart_re_executes_after_the_upgrade_command(tmp_path: Path) -> None:
    marker = tmp_path / "installed"
    done = _restart(tmp_path, f"touch {marker}")
    assert done.stdout.strip() == "new process" and marker.exists()
    failed = _restart(tmp_path, "false")  # logged; restarts on what is installed
    assert failed.stdout.strip() == "new process"
    assert _restart(tmp_path, "exit").stdout.strip() == "returned"  # for an orchestrator
