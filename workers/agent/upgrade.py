"""A node's side of an upgrade asked in the cloud (:mod:`dmg.cloud.service.upgrades`).

The request arrives in the answer to the node's heartbeat (``upgrade: true``). Then:

1. :class:`NodeUpgrade` flags the node ``upgrade`` in the site's drain flags (the
   dispatcher places nothing new on it, :mod:`workers.agent.drain` reports it
   draining) and moves its queued shards that have not started to other nodes;
   its heartbeats say ``upgrading`` (status Upgrading);
2. once the cloud has recorded that (its answer stops asking) and no shard runs here
   any more, or after ``DMG_UPGRADE_DRAIN_TIMEOUT`` s (a shard still running then
   gets a new attempt elsewhere when the next process reclaims this node's work),
   ``on_ready`` stops the node: services (a dispatcher hands its lease over), worker
   (warm), agent (a last beat, still Upgrading);
3. :func:`restart_on_new_version` runs ``DMG_UPGRADE_COMMAND`` and re-executes the
   node's own command line, so the version installed now starts; its first heartbeat
   ends the upgrade in the cloud, and :class:`workers.agent.drain.DrainField` clears the
   ``upgrade`` flag.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from dmg.attempt_ends import NODE_DRAINED
from dmg.errors import BrokerError
from dmg.site.attempts import requeue
from dmg.site.state import DRAIN_UPGRADE, SiteState
from workers.agent.periodic import Periodic

log = logging.getLogger(__name__)

#: ``DMG_UPGRADE_COMMAND`` that exits instead of restarting (an orchestrator starts the new image).
EXIT = "exit"
#: Seconds ``DMG_UPGRADE_COMMAND`` may run.
COMMAND_TIMEOUT = 1800.0


class NodeUpgrade:
    """Watches the cloud's answers for an upgrade request and drains the node for it.

    ``cloud_answer()`` is the cloud's last answer to a heartbeat (None before one);
    ``on_ready`` is called once, from the watch thread, when the node may stop. ``fields()``
    is what the heartbeat carries. Not reusable after the upgrade.
    """

    def __init__(self, state: SiteState, node: str, *, cloud_answer: Callable[[], dict[str, Any] | None],
                 on_ready: Callable[[], None], drain_timeout: float, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.node = node
        self.cloud_answer = cloud_answer
        self.on_ready = on_ready
        self.drain_timeout = drain_timeout
        self.clock = clock
        self.began: float | None = None
        self.ready = threading.Event()
        self._loop = Periodic(self.step, interval=interval, name=f"dmg-upgrade-{node}", what="upgrade watch")

    def fields(self) -> dict[str, Any]:
        return {"upgrading": True, "draining": True} if self.began is not None else {}

    def step(self) -> None:
        """One look: take a request up, or stop the node once drained (see the module docstring)."""
        if self.ready.is_set():
            return
        answer = self.cloud_answer() or {}
        try:
            if self.began is None:
                if answer.get("upgrade"):
                    self._begin()
                return
            if answer.get("upgrade"):  # the cloud has not heard yet that this node took it up
                return
            left = self.state.queued(self.node) | self.state.running(self.node)
        except BrokerError as exc:
            log.warning("upgrade waits for the site broker node=%s error=%s", self.node, exc)
            return
        waited = self.clock() - self.began
        if left and waited < self.drain_timeout:
            return
        if left:
            log.warning("upgrade: %d shard(s) still run after %.0f s; stopping anyway (they get new "
                        "attempts elsewhere) node=%s", len(left), waited, self.node)
        log.info("upgrade: node drained after %.1f s; stopping to restart on the installed version "
                 "node=%s", waited, self.node)
        self.ready.set()
        self.on_ready()

    def _begin(self) -> None:
        self.state.set_drain(self.node, DRAIN_UPGRADE)
        moved = [s for s in sorted(self.state.queued(self.node))
                 if requeue(self.state, s, self.node, reason=NODE_DRAINED) > 0]
        self.began = self.clock()
        log.info("upgrade requested: draining node=%s moved_queued=%d", self.node, len(moved))

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()


def restart_on_new_version(command: str, *, argv: Sequence[str] | None = None,
                           executable: str | None = None) -> None:
    """Replace this process by the node's own command line on the version installed now.

    ``command`` (``DMG_UPGRADE_COMMAND``): "" re-executes at once; ``exit`` returns (the
    caller exits 0, and an orchestrator starts the new image); anything else is run first
    (split like a shell would, no shell), and its failure is logged: the node still restarts,
    on whatever is installed (``dmg gateway upgrade`` then says it came back on its old
    version). Returns only for ``exit``.
    """
    if command.strip() == EXIT:
        log.info("upgrade: exiting for the orchestrator to start the new version")
        return
    if command.strip():
        try:
            done = subprocess.run(shlex.split(command), stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT,
                                  check=False)
            if done.returncode:
                log.error("upgrade command exited with code %d; restarting on what is installed",
                          done.returncode)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            log.error("upgrade command did not run (%s); restarting on what is installed", exc)
    args = list(sys.orig_argv if argv is None else argv)
    log.info("upgrade: restarting the node process: %s", " ".join(args))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(executable or sys.executable, args)
