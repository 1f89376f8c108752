"""The node's status, reasons and role in Flower: a worker bootstep whose ``info`` joins
the worker's ``inspect stats`` (Flower's worker page, tab "Other"; ``/api/workers``).

The figures are the node's last heartbeat in the site's Redis: its role, and the status
and reasons the cloud answered to its previous heartbeat (so at most one heartbeat
interval old); ``unknown`` while the node has none.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

import settings as dmg_settings
from dmg import registration as local_registration
from dmg.site.state import SiteState
from workers.context import redis_client

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


class NodeInfoStep(bootsteps.StartStopStep):
    """Adds ``dmg_status``, ``dmg_reasons`` and ``dmg_role`` to the worker's stats (a
    start/stop step that does nothing when started: only those join the worker's steps,
    whose ``info`` the stats gather)."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.settings: dmg_settings.Settings = (getattr(parent.app, "dmg_settings", None)
                                                or dmg_settings.load())
        self._state: SiteState | None = None
        self._node = ""

    def info(self, obj: Any) -> dict[str, Any]:
        try:
            if self._state is None:
                registration = local_registration.load(self.settings.data_dir, self.settings.node_name)
                self._node = registration.node
                client = redis_client(self.settings, fail_fast=True, registration=registration)
                self._state = SiteState(client, registration.gateway)
            beat = self._state.heartbeats().get(self._node) or {}
        except Exception as exc:  # stats must answer whatever the broker does
            log.debug("no node status for the worker's stats: %s", exc)
            beat = {}
        return {"dmg_status": str(beat.get("cloud_status") or UNKNOWN),
                "dmg_reasons": "; ".join(map(str, beat.get("cloud_reasons") or [])),
                "dmg_role": str(beat.get("role") or UNKNOWN)}
