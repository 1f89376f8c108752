"""``GET /metrics``: the cloud's figures in Prometheus' text format.

A custom collector (:class:`CloudCollector`) reads the database at scrape time
(:mod:`dmg.cloud.service.metrics_read`), so every process serving the cloud answers
the same figures: no in-process counter, no multiprocess directory.

Who may scrape: the users' API token (``Authorization: Bearer``), like every other
read of the whole cloud; a node token gets 403 (it may not read other nodes'
figures). ``DMG_CLOUD_METRICS_PUBLIC=1`` opens the route to anyone, for a Prometheus
on a private network that holds no token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dmg.cloud.api.auth import public, require_user
from dmg.cloud.models import CANCELLED, FAILED, IN_PROGRESS, QUEUED, SUCCEEDED
from dmg.cloud.service.metrics_read import LATENCY_BUCKETS, Histogram, Snapshot
from dmg.status import NEEDS_REGISTRATION, NODE_STATUSES

NODE = ["gateway", "node"]
GATEWAY = ["gateway"]
ACTIVITY_RUN_STATUSES = (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELLED)
GATEWAY_STATUSES = (NEEDS_REGISTRATION, *NODE_STATUSES)
CREDENTIAL_STATES = ("none", "in_sync", "out_of_sync")


def _reasons(reasons: tuple[str, ...]) -> str:
    return "; ".join(reasons)


def node_families(snapshot: Snapshot) -> Iterator[Metric]:
    status = GaugeMetricFamily("dmg_node_status", "1 for the node's current status, 0 for the others",
                               labels=[*NODE, "status"])
    info = InfoMetricFamily("dmg_node", "the node's status, its reasons (; between them), version, role "
                            "and credential status in words", labels=NODE)
    gauges = {
        "cpu": GaugeMetricFamily("dmg_node_cpu_percent", "CPU use its last heartbeat reported (%)",
                                 labels=NODE),
        "memory": GaugeMetricFamily("dmg_node_memory_available_bytes",
                                    "memory available its last heartbeat reported", labels=NODE),
        "rx": GaugeMetricFamily("dmg_node_network_receive_bytes_per_second",
                                "network in between its last two heartbeats", labels=NODE),
        "tx": GaugeMetricFamily("dmg_node_network_transmit_bytes_per_second",
                                "network out between its last two heartbeats", labels=NODE),
        "running": GaugeMetricFamily("dmg_node_jobs_running", "shards running on the node", labels=NODE),
        "limit": GaugeMetricFamily("dmg_node_jobs_limit", "the node's concurrent-job limit", labels=NODE),
        "beat": GaugeMetricFamily("dmg_node_last_heartbeat_timestamp_seconds",
                                  "when the cloud got its last heartbeat (0: never)", labels=NODE),
    }
    credential = GaugeMetricFamily("dmg_node_credential_status",
                                   "1 for the node's credential state, 0 for the others "
                                   "(none: the gateway has no synced credential)",
                                   labels=[*NODE, "state"])
    for n in snapshot.nodes:
        key = [n.gateway, n.node]
        for word in NODE_STATUSES:
            status.add_metric([*key, word], 1.0 if n.status == word else 0.0)
        info.add_metric(key, {"status": n.status, "reasons": _reasons(n.reasons), "version": n.version,
                              "role": n.role, "credential_status": n.credential_status})
        for name, value in (("cpu", n.cpu_percent), ("memory", n.memory_available), ("rx", n.network_in),
                            ("tx", n.network_out), ("running", n.running), ("limit", n.limit),
                            ("beat", n.last_heartbeat or 0.0)):
            gauges[name].add_metric(key, float(value))
        state = ("none" if n.credentials_in_sync is None
                 else "in_sync" if n.credentials_in_sync else "out_of_sync")
        for word in CREDENTIAL_STATES:
            credential.add_metric([*key, word], 1.0 if state == word else 0.0)
    yield status
    yield info
    yield from gauges.values()
    yield credential


def gateway_families(snapshot: Snapshot) -> Iterator[Metric]:
    status = GaugeMetricFamily("dmg_gateway_status", "1 for the gateway's current status, 0 for the others",
                               labels=[*GATEWAY, "status"])
    info = InfoMetricFamily("dmg_gateway", "the gateway's status, its reasons, version and dispatcher",
                            labels=GATEWAY)
    nodes = GaugeMetricFamily("dmg_gateway_nodes", "registered nodes", labels=GATEWAY)
    failovers = CounterMetricFamily("dmg_gateway_failovers", "dispatcher takeovers after the first "
                                    "(cloud epochs issued - 1)", labels=GATEWAY)
    runs = GaugeMetricFamily("dmg_gateway_activity_runs", "activity runs in the cloud by status",
                             labels=[*GATEWAY, "status"])
    moved_bytes = CounterMetricFamily("dmg_gateway_moved_bytes", "bytes of the shards that succeeded",
                                      labels=GATEWAY)
    moved_files = CounterMetricFamily("dmg_gateway_moved_files", "files of the shards that succeeded",
                                      labels=GATEWAY)
    attempts = CounterMetricFamily("dmg_gateway_shard_attempts", "attempts of shards by how they ended "
                                   "(open: still running)", labels=[*GATEWAY, "outcome"])
    for g in snapshot.gateways:
        for word in GATEWAY_STATUSES:
            status.add_metric([g.gateway, word], 1.0 if g.status == word else 0.0)
        info.add_metric([g.gateway], {"status": g.status, "reasons": _reasons(g.reasons),
                                      "version": g.version, "dispatcher": g.dispatcher})
        nodes.add_metric([g.gateway], float(g.nodes))
        failovers.add_metric([g.gateway], float(g.failovers))
        for word in ACTIVITY_RUN_STATUSES:
            runs.add_metric([g.gateway, word], float(snapshot.activity_runs.get((g.gateway, word), 0)))
        size, files = snapshot.moved.get(g.gateway, (0, 0))
        moved_bytes.add_metric([g.gateway], float(size))
        moved_files.add_metric([g.gateway], float(files))
    for (gateway, outcome), count in sorted(snapshot.attempts.items()):
        attempts.add_metric([gateway, outcome], float(count))
    yield from (status, info, nodes, failovers, runs, moved_bytes, moved_files, attempts)
    yield _histogram("dmg_gateway_claim_latency_seconds",
                     "an activity run's submit to its claim by the dispatcher", snapshot.claim_latency)
    yield _histogram("dmg_gateway_dispatch_latency_seconds",
                     "an attempt placed on a node's queue to that node starting it",
                     snapshot.dispatch_latency)


def _histogram(name: str, documentation: str, rows: list[Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=GATEWAY)
    for row in rows:
        buckets = [(repr(bound), float(n)) for bound, n in zip(LATENCY_BUCKETS, row.buckets, strict=True)]
        family.add_metric([row.gateway], [*buckets, ("+Inf", float(row.count))], sum_value=row.total)
    return family


class CloudCollector(Collector):
    """Every dmg family from one database snapshot per scrape."""

    def __init__(self, read: Callable[[], Snapshot]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        snapshot = self.read()
        yield from node_families(snapshot)
        yield from gateway_families(snapshot)


def metrics_router(read: Callable[[], Snapshot], *, open_to_all: bool) -> APIRouter:
    """The ``/metrics`` route, of scope ``user`` (``public`` when ``open_to_all``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CloudCollector(read))
    router = APIRouter(dependencies=[Depends(public if open_to_all else require_user)])

    @router.get("/metrics", tags=["metrics"], response_class=Response,
                responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        """Every node's and gateway's figures in Prometheus' text format (README: Metrics)."""
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
