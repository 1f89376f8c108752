"""Node metrics history: every heartbeat kept for an hour, then averaged, then pruned.

Each heartbeat adds one raw sample (resolution 0) of the node's CPU, available memory,
jobs running / limit and network in/out (:func:`record`). :func:`compact` (run at most
once per :data:`COMPACT_EVERY` by the heartbeat path) then:

- averages raw samples older than :data:`RAW_FOR` into 1-minute buckets (resolution 60),
- averages 1-minute buckets older than :data:`MINUTES_FOR` into 10-minute ones (600),
- deletes every sample older than the retention (``DMG_CLOUD_HISTORY_RETENTION``).

Buckets are aligned to their size and cut only once complete, so compaction is
idempotent; a bucket that exists already absorbs the late samples by weighted average.
A node's samples go with the node (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dmg.cloud.models import NodeSample

RAW = 0
MINUTE = 60
TEN_MINUTES = 600
#: Seconds raw heartbeats are kept before they become 1-minute averages.
RAW_FOR = 3600.0
#: Seconds 1-minute averages are kept before they become 10-minute ones.
MINUTES_FOR = 86400.0
#: Seconds between two compactions by one cloud process.
COMPACT_EVERY = 60.0

FIGURES = ("cpu_percent", "memory_available", "running", "limit", "network_in", "network_out")


@dataclass(frozen=True)
class Figures:
    """The figures of one heartbeat that the history keeps."""

    cpu_percent: float
    memory_available: float
    running: float
    limit: float
    network_in: float
    network_out: float


def record(session: Session, node_id: int, figures: Figures, *, now: float) -> None:
    """Add one raw sample of ``node_id`` at ``now`` (server time)."""
    session.add(NodeSample(node_id=node_id, resolution=RAW, at=now, samples=1,
                           **{name: float(getattr(figures, name)) for name in FIGURES}))


def _fold(session: Session, *, source: int, target: int, before: float) -> int:
    """Average ``source`` samples older than ``before`` into ``target``-second buckets
    (only whole buckets); -> how many source samples were folded."""
    cut = (before // target) * target
    rows = session.scalars(select(NodeSample).where(NodeSample.resolution == source,
                                                    NodeSample.at < cut)).all()
    if not rows:
        return 0
    groups: dict[tuple[int, float], list[NodeSample]] = defaultdict(list)
    for row in rows:
        groups[(row.node_id, (row.at // target) * target)].append(row)
    existing = {(row.node_id, row.at): row for row in session.scalars(
        select(NodeSample).where(NodeSample.resolution == target,
                                 NodeSample.at.in_(sorted({at for _, at in groups}))))}
    for (node_id, at), members in groups.items():
        bucket = existing.get((node_id, at))
        if bucket is None:
            bucket = NodeSample(node_id=node_id, resolution=target, at=at, samples=0,
                                **{name: 0.0 for name in FIGURES})
            session.add(bucket)
        weight = bucket.samples + sum(m.samples for m in members)
        for name in FIGURES:
            total = getattr(bucket, name) * bucket.samples
            total += sum(getattr(m, name) * m.samples for m in members)
            setattr(bucket, name, total / weight)
        bucket.samples = weight
    session.execute(delete(NodeSample).where(NodeSample.id.in_([row.id for row in rows])))
    return len(rows)


def compact(session: Session, *, now: float, retention: float) -> dict[str, int]:
    """Downsample and prune every node's history (idempotent); -> counts of what it did."""
    folded_raw = _fold(session, source=RAW, target=MINUTE, before=now - RAW_FOR)
    folded_minutes = _fold(session, source=MINUTE, target=TEN_MINUTES, before=now - MINUTES_FOR)
    pruned = session.execute(delete(NodeSample).where(NodeSample.at < now - retention))
    session.flush()
    return {"raw_folded": folded_raw, "minutes_folded": folded_minutes,
            "pruned": int(getattr(pruned, "rowcount", 0) or 0)}


def samples(session: Session, node_id: int, *, since: float) -> list[dict[str, Any]]:
    """The node's samples at or after ``since``, oldest first, each
    ``{at, resolution, samples, cpu_percent, memory_available, running, limit,
    network_in, network_out}`` (a bucket's ``at`` is its start)."""
    rows = session.scalars(select(NodeSample).where(NodeSample.node_id == node_id, NodeSample.at >= since)
                           .order_by(NodeSample.at, NodeSample.resolution.desc())).all()
    return [{"at": row.at, "resolution": row.resolution, "samples": row.samples,
             **{name: getattr(row, name) for name in FIGURES}} for row in rows]


def node_history(session: Session, gateway_name: str, node_name: str, *, since: float) -> dict[str, Any]:
    """``{gateway, node, since, samples: [...]}`` of one node; NotFound for an unknown
    gateway or node."""
    from dmg.cloud.service.gateways import get_node

    node = get_node(session, gateway_name, node_name)
    return {"gateway": gateway_name, "node": node_name, "since": since,
            "samples": samples(session, node.id, since=since)}
