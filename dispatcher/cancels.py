"""Applying the cancellations users make in the cloud to the site.

The cloud cannot reach the site's broker, so the dispatcher learns, before every
claim, which activity runs of its gateway were cancelled: the answer to its last claim
carries them (the claim long-poll returns at once when one is cancelled), so this costs
no request of its own; only when no claim was answered within the last second (the first
look, one after a failed claim, a claimer waiting for room to plan) or the cloud is older
than the dispatcher does the client ask ``GET /dispatch/cancelled``, at most once a second
(:meth:`dmg.cloud.client.CloudClient.cancelled_activity_runs`).
For each, :meth:`dmg.site.state.SiteState.cancel`
sets the cancel flag and drops the run's pending shards. The flag does the rest:

- a shard already queued on a node is refused by its worker when it starts
  (checked with the fencing data, :mod:`workers.run.shard`);
- a running shard stops between files and chunks, aborting its staged writes
  (:func:`dmg.transfer.copy_entries`'s ``stop_reason``).

Idempotent: the cloud repeats a cancellation for an hour (a new dispatcher after a
failover applies it again); nothing already committed is rolled back.
"""

from __future__ import annotations

import logging

from dispatcher.ports import DispatchCloud
from dmg.errors import BrokerError, DmgError
from dmg.site.state import SiteState

log = logging.getLogger(__name__)


class CancelWatch:
    """Applies the cloud's cancellations to the site state; see the module docstring."""

    def __init__(self, state: SiteState, cloud: DispatchCloud) -> None:
        self.state = state
        self.cloud = cloud
        self._applied: set[str] = set()

    def apply(self) -> list[str]:
        """Ask the cloud and apply what it says; -> the activity runs newly cancelled.
        A cloud or broker that does not answer is tried again on the next call."""
        try:
            cancelled = self.cloud.cancelled_activity_runs()
        except DmgError as exc:
            log.debug("cannot ask the cloud for cancelled runs: %s", exc)
            return []
        fresh = []
        for activity_run_id in cancelled:
            try:
                dropped = self.state.cancel(activity_run_id)
            except BrokerError as exc:
                log.warning("cannot apply the cancel of activity_run=%s (broker): %s", activity_run_id, exc)
                continue
            if activity_run_id not in self._applied:
                self._applied.add(activity_run_id)
                fresh.append(activity_run_id)
                log.info("activity run cancelled activity_run=%s pending_dropped=%d",
                         activity_run_id, len(dropped))
        return fresh
