"""Apply what a user asked of this node from the portal (the cloud's heartbeat answer).

The cloud answers every heartbeat with ``requests: {limit?, drain?}``
(:mod:`dmg.cloud.service.noderequests`) until a beat shows them done. This node applies
them with the site's own paths, as the CLI would from inside the site:

- ``limit``: the ``dmg_scale`` remote-control command to this node's worker
  (:mod:`workers.agent.scaling`, as ``dmg scale`` sends it): the pool grows at once
  and shrinks as shards finish; the limit is kept across restarts;
- ``drain: true``: the site's drain flag (as ``dmg node drain``), and the shards queued
  here and not started move to other nodes; ``drain: false``: the flag is cleared
  (as ``dmg node undrain``). A node flagged ``removed`` is never undrained this way.

A request is sent again on every beat until done (the commands are idempotent), at
most once per :data:`RESEND_AFTER` s for the pool command. Nothing here may stop a
heartbeat: errors are logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dmg.attempt_ends import NODE_DRAINED
from dmg.errors import BrokerError
from dmg.site.attempts import requeue
from dmg.site.state import DRAIN_REMOVED, SiteState
from settings import Settings

log = logging.getLogger(__name__)

#: Seconds before the same limit is sent to the worker again.
RESEND_AFTER = 5.0


class PortalRequests:
    """``on_answer`` of :class:`workers.agent.node_agent.NodeAgent`."""

    def __init__(self, settings: Settings, state: SiteState, node: str, gateway: str, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.state = state
        self.node = node
        self.gateway = gateway
        self.clock = clock
        self._sent: tuple[int, float] | None = None
        self._app: Any = None

    def __call__(self, answer: dict[str, Any]) -> None:
        asked = answer.get("requests") or {}
        if not isinstance(asked, dict):
            return
        try:
            if isinstance(asked.get("drain"), bool):
                self._drain(asked["drain"])
            limit = asked.get("limit")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                self._scale(limit)
        except BrokerError as exc:
            log.warning("cannot apply the portal's request node=%s error=%s", self.node, exc)
        except Exception:  # never stop a heartbeat
            log.exception("cannot apply the portal's request node=%s", self.node)

    def _drain(self, drain: bool) -> None:
        flag = self.state.drained().get(self.node)
        if drain and flag is None:
            self.state.set_drain(self.node)
            moved = [s for s in sorted(self.state.queued(self.node))
                     if requeue(self.state, s, self.node, reason=NODE_DRAINED) > 0]
            log.info("drained from the portal node=%s moved=%d", self.node, len(moved))
        elif not drain and flag is not None and flag != DRAIN_REMOVED:
            self.state.clear_drain(self.node)
            log.info("undrained from the portal node=%s", self.node)

    def _scale(self, limit: int) -> None:
        now = self.clock()
        if self._sent is not None and self._sent[0] == limit and now - self._sent[1] < RESEND_AFTER:
            return
        self._sent = (limit, now)
        self._control().broadcast("dmg_scale", arguments={"limit": limit},
                                  destination=[f"{self.node}@{self.gateway}"], reply=False)
        log.info("limit set from the portal node=%s limit=%d", self.node, limit)

    def _control(self) -> Any:
        if self._app is None:
            from celery import Celery

            from settings.celery import celery_config

            self._app = Celery("dmg-agent-requests", set_as_current=False)
            self._app.conf.update(celery_config(self.settings))
        return self._app.control

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None
