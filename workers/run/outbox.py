"""Shard reports that could not reach the cloud wait in Redis until delivered.

DESIGN.md: "the cloud being unreachable stops new claims, not running work;
reports are retried until delivered". Each node has its own outbox, a Redis list
``dmg:<gateway>:outbox:<node>`` of ``{"shard_id", "report"}`` JSON; the node agent
flushes it in order whenever the cloud answers again.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from dmg.errors import BrokerError, DmgError, Retryable
from dmg.site.state import SiteState
from workers.run.reporter import Reporter

log = logging.getLogger(__name__)


class ReportOutbox:
    """A node's queue of undelivered shard reports (oldest first)."""

    def __init__(self, state: SiteState, node: str) -> None:
        self.state = state
        self.node = node
        self.key = state.keys.outbox(node)

    def push(self, shard_id: str, report: dict[str, Any]) -> None:
        self.state.redis.rpush(self.key, json.dumps({"shard_id": shard_id, "report": report}))

    def size(self) -> int:
        return int(self.state.redis.llen(self.key))

    def flush(self, reporter: Reporter, *, max_seconds: float | None = None) -> int:
        """Deliver queued reports in order; returns how many left the outbox.

        Stops at the first Retryable (the report stays first in line), and once
        ``max_seconds`` have passed (the rest waits for the next flush: a long backlog
        must not hold up the caller's heartbeats). A report the cloud refuses for good
        (StaleAttempt, NotFound, ...) is dropped with a warning.
        """
        done = 0
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while deadline is None or time.monotonic() < deadline:
            raw: Any = self.state.redis.lindex(self.key, 0)
            if raw is None:
                return done
            item = json.loads(raw)
            try:
                reporter.report_shard(item["shard_id"], item["report"])
            except Retryable:
                return done
            except DmgError as exc:
                log.warning("shard report dropped shard=%s status=%s error=%s",
                            item["shard_id"], item["report"].get("status"), exc)
            # Remove exactly the item delivered (LREM of its first occurrence).
            self.state.redis.lrem(self.key, 1, raw)
            done += 1
        return done


class OutboxReporter:
    """Delivers through ``inner`` now if it can, else through the outbox later.

    Never raises: a report is delivered, queued, or (refused by the cloud for good)
    dropped with a warning. Reports keep their order: while older reports wait in
    the outbox, new ones queue behind them.
    """

    def __init__(self, inner: Reporter, outbox: ReportOutbox) -> None:
        self.inner = inner
        self.outbox = outbox

    def report_shard(self, shard_id: str, report: dict[str, Any]) -> None:
        try:
            if self.outbox.size() == 0:
                try:
                    self.inner.report_shard(shard_id, report)
                    return
                except Retryable as exc:
                    log.warning("cloud unreachable, shard report queued shard=%s status=%s error=%s",
                                shard_id, report.get("status"), exc)
                except DmgError as exc:
                    log.warning("shard report refused shard=%s status=%s error=%s",
                                shard_id, report.get("status"), exc)
                    return
            self.outbox.push(shard_id, report)
        except BrokerError as exc:
            log.error("shard report lost (broker unreachable) shard=%s status=%s error=%s",
                      shard_id, report.get("status"), exc)
