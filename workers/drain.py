"""The ``draining`` field of a node's heartbeat, from the site's drain flags.

``dmg node drain NAME`` and ``dmg node remove NAME`` set a flag in the site state
(``drain`` hash: ``drain`` or ``removed``); the dispatcher places nothing new on a
flagged node (:func:`dispatcher.placement.node_loads`). The node's agent reports
the flag as ``draining`` so the cloud shows it.

A node flagged ``removed`` that starts again and whose heartbeat the cloud
accepts was registered anew (a removed node's token is refused): the flag is
cleared and the node takes work again. A node removed while it runs stays
drained until it is stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from dmg.sitestate import SiteState

log = logging.getLogger(__name__)

DRAIN = "drain"
REMOVED = "removed"


class DrainField:
    """``extras`` for :class:`workers.agent.NodeAgent`: ``{"draining": bool}``.

    ``cloud_accepted()`` says whether this process had a heartbeat accepted by the
    cloud. A broker outage leaves the field out (the agent's default applies).
    """

    def __init__(self, state: SiteState, node: str, *, cloud_accepted: Callable[[], bool]) -> None:
        self.state = state
        self.node = node
        self.cloud_accepted = cloud_accepted
        self._removed_at_start: bool | None = None

    def flag(self) -> str | None:
        return self.state.drained().get(self.node)

    def __call__(self) -> dict[str, Any]:
        try:
            flag = self.flag()
            if self._removed_at_start is None:
                self._removed_at_start = flag == REMOVED
            if flag == REMOVED and self._removed_at_start and self.cloud_accepted():
                self.state.clear_drain(self.node)
                log.info("node registered again after its removal; taking work node=%s", self.node)
                flag = None
        except redis.RedisError:
            return {}
        return {"draining": flag is not None}
