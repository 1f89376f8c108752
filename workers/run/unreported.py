"""Final reports the cloud will never take: the node was removed while its attempt ended.

A node removed from its gateway (``dmg node remove``, or in the cloud only) has its
token refused (:class:`dmg.errors.Unauthorized`). A shard it finished just before or
just after the removal is done in the site state (the worker marks it finished after
queueing its report) while the cloud, refusing the report, shows it placed or running
for ever: the dispatcher's recovery moves only queued and running shards, so the
activity run would never end. The node hands such an attempt back instead
(:func:`dmg.site.attempts.reopen`, its own work): a new attempt goes first in ``pending``
and runs on another node. A report that is not final needs nothing: its shard is
still queued or running on the removed node, and :func:`dispatcher.recovery.requeue_gone`
moves it.
"""

from __future__ import annotations

import logging
from typing import Any

from dmg.attempt_ends import NODE_REMOVED
from dmg.shards.status import CLOUD_FINISHED
from dmg.site.attempts import reopen
from dmg.site.state import SiteState

log = logging.getLogger(__name__)


def hand_back_unreported(state: SiteState, node: str, shard_id: str, report: dict[str, Any]) -> int:
    """Reopen ``shard_id`` when ``report`` is the final report of its current attempt on
    ``node``, refused because the node's token is; returns the new attempt, else 0.
    Raises BrokerError."""
    if report.get("status") not in CLOUD_FINISHED:
        return 0
    attempt = int(report.get("attempt") or 0)
    new = reopen(state, shard_id, node, attempt=attempt, reason=NODE_REMOVED) if attempt else 0
    if new:
        log.warning("shard report refused (node removed); shard back to pending for another node "
                    "shard=%s node=%s attempt=%d new_attempt=%d status=%s", shard_id, node, attempt, new,
                    report.get("status"))
    return new
