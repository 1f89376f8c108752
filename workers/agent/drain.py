"""The ``draining`` field of a node's heartbeat, from the site's drain flags.

``dmg node drain NAME`` and ``dmg node remove NAME`` set a flag in the site state
(``drain`` hash: ``drain`` or ``removed``); the dispatcher places nothing new on a
flagged node (:func:`dispatcher.placement.node_loads`) and gives the shards of a
node flagged ``removed`` new attempts elsewhere
(:func:`dispatcher.recovery.requeue_gone`). The node's agent reports the flag as
``draining`` so the cloud shows it.

- A node flagged ``removed`` when this process starts, whose heartbeat the cloud
  then accepts, was registered anew (a removed node's token is refused): the flag
  is cleared once and the node takes work.
- A node flagged ``upgrade`` when this process starts is the process its upgrade
  restarted (:mod:`workers.agent.upgrade`): the flag is cleared and it takes work.
- A removal seen while this process runs (the flag appears, or the cloud refuses
  its token: removed while the broker could not be told) keeps it out until it is
  stopped: it flags itself ``removed`` and takes no more work. Registered again and
  restarted, it is back to the first case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dmg.errors import BrokerError
from dmg.site.state import DRAIN_REMOVED, DRAIN_UPGRADE, SiteState

log = logging.getLogger(__name__)

DRAIN = "drain"
REMOVED = DRAIN_REMOVED
UPGRADE = DRAIN_UPGRADE


class DrainField:
    """``extras`` for :class:`workers.agent.node_agent.NodeAgent`: ``{"draining": bool}``.

    ``cloud_accepted()`` says whether this process had a heartbeat accepted by the
    cloud; ``cloud_refused()`` whether the cloud's last answer refused its token (the
    node was removed). A broker outage leaves the field out (the agent's default applies).
    """

    def __init__(self, state: SiteState, node: str, *, cloud_accepted: Callable[[], bool],
                 cloud_refused: Callable[[], bool] = lambda: False) -> None:
        self.state = state
        self.node = node
        self.cloud_accepted = cloud_accepted
        self.cloud_refused = cloud_refused
        # True while a removal flag found at start may still be lifted by a new registration.
        self._removed_at_start: bool | None = None

    def flag(self) -> str | None:
        return self.state.drained().get(self.node)

    def __call__(self) -> dict[str, Any]:
        try:
            flag = self.flag()
            if self._removed_at_start is None and flag == UPGRADE:
                self.state.clear_drain(self.node)  # this process is the one the upgrade started
                log.info("node restarted after its upgrade; taking work node=%s", self.node)
                flag = None
            if self._removed_at_start is None:
                self._removed_at_start = flag == REMOVED
            if flag != REMOVED:
                self._removed_at_start = False  # a removal from now on is for good
            if flag == REMOVED and self._removed_at_start and self.cloud_accepted():
                self.state.clear_drain(self.node)
                self._removed_at_start = False
                log.info("node registered again after its removal; taking work node=%s", self.node)
                flag = None
            if flag != REMOVED and self.cloud_refused():
                self.state.set_drain(self.node, REMOVED)
                log.warning("the cloud refuses this node's token (removed); taking no more work node=%s",
                            self.node)
                flag = REMOVED
        except BrokerError:
            return {}
        return {"draining": flag is not None}
