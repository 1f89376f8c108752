"""An activity run's bandwidth limit and schedule, shared through the site's Redis.

The limit lives under ``bw:<activity run>`` (:meth:`dmg.site.state.SiteState.set_bandwidth`,
written by ``dmg runs bandwidth``); without it, the activity's ``bandwidth``
option applies. Every shard of the run, on every node, books its bytes on one
schedule, ``bwtat:<activity run>`` (GCRA with Redis's own clock), so the limit
holds for the activity as a whole, not per shard.

When Redis cannot be reached, the throttle keeps the last limit it knew and
books on a schedule local to this process: a broker outage never fails a copy.

The first read of a shard's limit is the one its attempt's start script made
(:meth:`dmg.site.state.SiteState.bandwidth_at_start`, less than :data:`START_READ_FRESH`
s old): no Redis round trip of its own; every later read asks Redis.
"""

from __future__ import annotations

import logging

from dmg.errors import BrokerError
from dmg.site.attempts import script_of
from dmg.site.state import SiteState
from dmg.transfer.throttle import LocalBandwidth

log = logging.getLogger(__name__)

#: Seconds the limit read by the attempt's start stands for the first read (the throttle's
#: own refresh period: a later change is seen as soon as it would have been).
START_READ_FRESH = 1.0

# KEYS: schedule. ARGV: bytes, bytes/s. -> seconds to wait (as text).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
local finish = start + tonumber(ARGV[1]) / tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%.6f', finish), 'PX', math.ceil((finish - now) * 1000) + 60000)
return string.format('%.6f', start - now)
"""


class SiteBandwidth:
    """The :class:`~dmg.transfer.throttle.BandwidthControl` of one activity run."""

    def __init__(self, state: SiteState, activity_run_id: str, *, default: float = 0) -> None:
        self.state = state
        self.activity_run_id = activity_run_id
        self.default = float(default)
        self._last = self.default
        self._schedule = state.keys.pacing(activity_run_id)
        self._script = script_of(state.redis, _RESERVE)
        self._local = LocalBandwidth()
        self._warned = False

    def current_limit(self) -> float:
        seen, value = self.state.bandwidth_at_start(self.activity_run_id, within=START_READ_FRESH)
        if seen:
            self._last = self.default if value is None else float(value)
            return self._last
        try:
            value = self.state.bandwidth(self.activity_run_id)
        except BrokerError as exc:
            self._warn(exc)
            return self._last
        self._last = self.default if value is None else float(value)
        return self._last

    def reserve(self, nbytes: int, limit: float) -> float:
        try:
            return float(self._script(keys=[self._schedule], args=[int(nbytes), float(limit)]))
        except BrokerError as exc:
            self._warn(exc)
            return self._local.reserve(nbytes, limit)

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("bandwidth schedule not shared (broker unreachable) activity_run=%s error=%s",
                        self.activity_run_id, exc)
