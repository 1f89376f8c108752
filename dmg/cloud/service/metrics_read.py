"""What the cloud's ``/metrics`` shows, read from the database at scrape time.

Everything comes from the database, nothing from process memory: a cloud served by
several processes (uvicorn ``--workers``, several hosts behind one database) shows the
same figures from whichever process answers. Each family is one query (nodes with
their gateway's credentials: two, loaded together); the histograms are one
aggregate query each (a full scan of ``shard_attempts`` / ``activity_runs``).

Definitions (the README's "Metrics" lists the metric names):

- **moved** bytes and files: those of shards whose latest attempt succeeded, so the
  figure only grows (a retried shard's partial progress is not counted twice);
- **shard attempts**: every attempt the cloud recorded, by how it ended
  (:mod:`dmg.attempt_ends`; ``open`` while it runs);
- **failovers**: dispatcher epochs the cloud issued after the first
  (``gateways.max_epoch - 1``: each is a takeover by another node, or the same node
  winning the lease again after losing it);
- **claim latency**: an activity run's submit -> its claim by the dispatcher;
- **dispatch latency**: an attempt placed on a node's queue -> the node starting it
  (the worker's ``running`` report): how long work waits on a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Float, and_, case, cast, func, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql.elements import ColumnElement

from dmg.cloud.models import ActivityRun, Gateway, Node, Shard, ShardAttempt
from dmg.cloud.service.gateways import gateway_json, node_roles, node_statuses
from dmg.cloud.service.views import node_credential_state
from dmg.shards.status import CLOUD_SUCCEEDED

#: Upper bounds (s) of the latency histograms' buckets (+Inf is added).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

#: ``attempt outcome`` label of an attempt still running.
OPEN = "open"


@dataclass(frozen=True)
class NodeSample:
    gateway: str
    node: str
    status: str
    reasons: tuple[str, ...]
    version: str
    role: str
    cpu_percent: float
    memory_available: int
    network_in: float
    network_out: float
    running: int
    limit: int
    credential_status: str
    credentials_in_sync: bool | None  # None: the gateway has no synced credential
    last_heartbeat: float | None


@dataclass(frozen=True)
class GatewaySample:
    gateway: str
    status: str
    reasons: tuple[str, ...]
    version: str
    dispatcher: str
    nodes: int
    epochs: int

    @property
    def failovers(self) -> int:
        return max(self.epochs - 1, 0)


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per bucket bound (:data:`LATENCY_BUCKETS`), count and sum."""

    gateway: str
    buckets: tuple[int, ...]
    count: int
    total: float


def gateways_and_nodes(session: Session, *, now: float, offline_after: float
                       ) -> tuple[list[GatewaySample], list[NodeSample]]:
    """Every gateway's and node's status, reasons and last reported figures."""
    rows = session.scalars(select(Gateway).order_by(Gateway.name).options(
        selectinload(Gateway.nodes), selectinload(Gateway.credentials))).all()
    gateways: list[GatewaySample] = []
    nodes: list[NodeSample] = []
    for gateway in rows:
        body = gateway_json(gateway, now=now, offline_after=offline_after)
        gateways.append(GatewaySample(
            gateway=gateway.name, status=str(body["status"]), reasons=tuple(body["reasons"]),
            version=str(body["version"] or ""), dispatcher=str(body["dispatcher"] or ""),
            nodes=len(gateway.nodes), epochs=int(gateway.max_epoch or 0)))
        statuses = node_statuses(gateway, now=now, offline_after=offline_after)
        roles = node_roles(gateway, statuses, now=now)
        for node in gateway.nodes:
            credential, problem = node_credential_state(node)
            nodes.append(_node_sample(gateway.name, node, statuses[node.id].status,
                                      statuses[node.id].reasons, roles[node.id], credential,
                                      None if not gateway.credentials else problem is None))
    return gateways, nodes


def _node_sample(gateway: str, node: Node, status: str, reasons: Sequence[str], role: str,
                 credential: str, in_sync: bool | None) -> NodeSample:
    return NodeSample(
        gateway=gateway, node=node.name, status=status, reasons=tuple(reasons), version=node.version,
        role=role, cpu_percent=float(node.cpu_percent or 0.0),
        memory_available=int(node.memory_available or 0), network_in=float(node.network_in or 0.0),
        network_out=float(node.network_out or 0.0), running=int(node.running or 0),
        limit=int(node.limit or 0), credential_status=credential, credentials_in_sync=in_sync,
        last_heartbeat=node.last_heartbeat)


def activity_runs_by_status(session: Session) -> dict[tuple[str, str], int]:
    """``{(gateway, status): activity runs}``."""
    query = (select(Gateway.name, ActivityRun.status, func.count())
             .join(Gateway, Gateway.id == ActivityRun.gateway_id)
             .group_by(Gateway.name, ActivityRun.status))
    return {(str(g), str(s)): int(n) for g, s, n in session.execute(query)}


def moved(session: Session) -> dict[str, tuple[int, int]]:
    """``{gateway: (bytes, files)}`` of the shards that succeeded."""
    query = (select(Gateway.name, func.coalesce(func.sum(Shard.bytes), 0),
                    func.coalesce(func.sum(Shard.files), 0))
             .join(ActivityRun, ActivityRun.id == Shard.activity_run_id)
             .join(Gateway, Gateway.id == ActivityRun.gateway_id)
             .where(Shard.status == CLOUD_SUCCEEDED)
             .group_by(Gateway.name))
    return {str(g): (int(b), int(f)) for g, b, f in session.execute(query)}


def attempts_by_outcome(session: Session) -> dict[tuple[str, str], int]:
    """``{(gateway, outcome): attempts}``: outcome as :mod:`dmg.attempt_ends` words it
    (succeeded, failed, cancelled, or how it was replaced), :data:`OPEN` while it runs."""
    query = (select(Gateway.name, ShardAttempt.outcome, func.count())
             .join(ActivityRun, ActivityRun.id == ShardAttempt.activity_run_id)
             .join(Gateway, Gateway.id == ActivityRun.gateway_id)
             .group_by(Gateway.name, ShardAttempt.outcome))
    return {(str(g), str(o or OPEN)): int(n) for g, o, n in session.execute(query)}


def _histogram(session: Session, latency: ColumnElement[float],
               source: type, joins: Sequence[tuple[type, ColumnElement[bool]]],
               where: ColumnElement[bool]) -> list[Histogram]:
    columns = [func.sum(case((latency <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS]
    query = select(Gateway.name, *columns, func.count(),
                   func.coalesce(func.sum(latency), 0.0)).select_from(source)
    for target, on in joins:
        query = query.join(target, on)
    query = query.where(where).group_by(Gateway.name)
    found = []
    for row in session.execute(query):
        name, *buckets, count, total = row
        found.append(Histogram(gateway=str(name), buckets=tuple(int(b or 0) for b in buckets),
                               count=int(count), total=float(total)))
    return found


def claim_latency(session: Session) -> list[Histogram]:
    """Per gateway: seconds from an activity run's submit to the dispatcher's claim."""
    latency = cast(ActivityRun.claimed_at - ActivityRun.queued_at, Float)
    return _histogram(session, latency, ActivityRun,
                      [(Gateway, Gateway.id == ActivityRun.gateway_id)],
                      ActivityRun.claimed_at.is_not(None))


def dispatch_latency(session: Session) -> list[Histogram]:
    """Per gateway: seconds from an attempt placed on a node to that node starting it."""
    latency = cast(ShardAttempt.started_at - ShardAttempt.placed_at, Float)
    return _histogram(session, latency, ShardAttempt,
                      [(ActivityRun, ActivityRun.id == ShardAttempt.activity_run_id),
                       (Gateway, Gateway.id == ActivityRun.gateway_id)],
                      and_(ShardAttempt.placed_at.is_not(None), ShardAttempt.started_at.is_not(None)))


@dataclass(frozen=True)
class Snapshot:
    """Everything ``/metrics`` shows, read in one transaction."""

    gateways: list[GatewaySample]
    nodes: list[NodeSample]
    activity_runs: dict[tuple[str, str], int]
    moved: dict[str, tuple[int, int]]
    attempts: dict[tuple[str, str], int]
    claim_latency: list[Histogram]
    dispatch_latency: list[Histogram]


def snapshot(session: Session, *, now: float, offline_after: float) -> Snapshot:
    gateways, nodes = gateways_and_nodes(session, now=now, offline_after=offline_after)
    return Snapshot(gateways=gateways, nodes=nodes, activity_runs=activity_runs_by_status(session),
                    moved=moved(session), attempts=attempts_by_outcome(session),
                    claim_latency=claim_latency(session), dispatch_latency=dispatch_latency(session))
