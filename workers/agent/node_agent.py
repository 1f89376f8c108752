"""The node agent: a heartbeat every ``settings.heartbeat_interval`` s.

A heartbeat is::

    {node, gateway, version, role, epoch, running, limit, pool_running, cpu_percent,
     memory_available, network_in, network_out, problems, credential_status, draining,
     stores_unreachable, stopped, encryption, config, config_fingerprint, peers_seen, inactive,
     proc_cpu_percent, proc_mem_bytes, moved_in_bytes, moved_out_bytes, ts}

``running``/``limit`` come from the worker's load key (:mod:`workers.agent.loadstep`);
``network_in``/``network_out`` are bytes/s since the previous beat; ``problems``
are connectivity problems in words ("broker unreachable", "cloud unreachable",
"worker process not responding", "store 'lake': <why>"); ``stores_unreachable``
names the stores this node cannot reach (from ``store_health``, see
:mod:`workers.agent.storecheck`): the dispatcher places no work needing them here. The
beat goes to the site state (expires after ``settings.offline_after``) and to the
cloud. An outage of either is recorded as
a problem and never stops the agent. The agent's
:class:`~workers.run.outbox.OutboxSender` thread delivers the node's queued shard reports
in batches as they come (:mod:`workers.run.outbox`); without one, each beat that reached
the cloud delivers them, for at most one heartbeat interval per beat. While reports wait
(the sender stuck), the beat carries the problem "N shard reports waiting for the
cloud", so a node back from a cloud outage stays Limited until the cloud has heard
everything it did meanwhile.

``config`` names the parts of the node's configuration that must match across the gateway
(:mod:`dmg.fingerprint`; ``config_fingerprint`` is their hash), with the proxy this node
applied; ``peers_seen`` the other nodes whose heartbeat it sees in the site broker (None
on the first beat and while the broker is unreachable): the cloud makes a node Inactive
when either shows it apart from the others (:mod:`dmg.inactivity`). ``inactive`` repeats
the cloud's last word that this node is Inactive: the dispatcher places no work on it.
The reply to a beat carries the gateway's proxy, which the agent applies at once
(:mod:`dmg.proxy`). ``cpu_percent``, ``memory_available``, ``network_*`` are the host's;
``proc_*`` the node's own process tree's and ``moved_*`` the bytes its copies read and
wrote (:mod:`workers.agent.ownfigures`).

``epoch`` is the dispatcher lease's epoch while this node holds it (0 otherwise): the
cloud shows the node with the highest one as the dispatcher. ``pool_running`` is False
while the worker publishes a pool of no process (dying, or stopped) or has published
none for :data:`LOAD_MISSING_GRACE` s (none yet at start); the cloud then shows the node
Offline ("worker pool not running"). A broker outage gives the pool the benefit of the
doubt: its load cannot be read, it is not known to be gone. :meth:`NodeAgent.say_stopped`
(a clean stop) sends one last beat with ``stopped`` and ``draining`` true: the cloud
shows the node Offline ("stopped") at once and the dispatcher places nothing more on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import psutil

from dmg import proxy as dmg_proxy
from dmg.errors import BrokerError, DmgError, Unauthorized
from dmg.fingerprint import config_hash, config_parts, redact_url
from dmg.proxy import proxy_path
from dmg.registration import NodeRegistration, node_dir
from dmg.site.identity import ForeignRedis
from dmg.site.state import SiteState
from dmg.status import INACTIVE
from dmg.version import __version__
from settings import Settings
from settings.redistls import encryption_mode
from workers.agent.ownfigures import ProcessTree
from workers.agent.periodic import Periodic
from workers.names import MAX_CARRIED, PACKED_CAPABILITY
from workers.run.outbox import OutboxSender, ReportOutbox
from workers.run.reporter import Reporter

log = logging.getLogger(__name__)

BROKER_UNREACHABLE = "broker unreachable"
CLOUD_UNREACHABLE = "cloud unreachable"
WORKER_NOT_RESPONDING = "worker process not responding"
REPORTS_WAITING = "shard reports waiting for the cloud"
REPORTS_HELD = "shard(s) with reports waiting for their placement at the cloud"
#: Seconds a report may wait for its placement at the cloud before the node says so (the
#: dispatcher's placement reports wait in Redis and normally arrive within seconds).
HELD_PROBLEM_AFTER = 60.0
#: At most this many unreachable stores are explained in ``problems``.
MAX_STORE_PROBLEMS = 32
#: Seconds a worker load that was seen may be missing before the pool counts as not running
#: (the load key lives 5 s and is published every second; a broker restart loses it briefly).
LOAD_MISSING_GRACE = 6.0


def store_problem(store: str, reason: str) -> str:
    """The problem line of an unreachable store: ``store '<name>'...`` and why."""
    prefix = f"store {store!r}"
    return reason if reason.startswith(prefix) else f"{prefix}: {reason}"


class HeartbeatClient(Protocol):
    """The part of :class:`dmg.cloud.client.CloudClient` the agent uses."""

    def heartbeat(self, beat: dict[str, Any]) -> dict[str, Any]: ...


class _NetRate:
    """Bytes/s received and sent since the previous call (psutil counters)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.last = self._sample()

    def _sample(self) -> tuple[float, int, int]:
        counters = psutil.net_io_counters()
        return self.clock(), int(counters.bytes_recv), int(counters.bytes_sent)

    def rates(self) -> tuple[float, float]:
        now = self._sample()
        elapsed = now[0] - self.last[0]
        received, sent = now[1] - self.last[1], now[2] - self.last[2]
        self.last = now
        if elapsed <= 0 or received < 0 or sent < 0:  # counters wrapped or reset
            return 0.0, 0.0
        return received / elapsed, sent / elapsed


class NodeAgent:
    """Builds and publishes heartbeats; :meth:`start`/:meth:`stop` run it in a thread.

    ``role`` says "dispatcher" or "worker" now; ``credential_status`` the state of
    credential sync; ``extras`` (optional) adds fields such as ``draining``.
    ``worker_grace`` s after start, a missing worker load counts as a problem.
    ``store_health`` (optional) returns ``{store name: reason}`` for the stores this
    node cannot reach; it may also be set later as the attribute of that name.
    When the broker turns out to be another gateway's (the state's identity check,
    :mod:`dmg.site.identity`), no beat is written there and ``on_foreign`` is called
    with the error (the node stops). ``on_answer`` (optional) gets each answer of the
    cloud to a heartbeat (it must not raise).
    """

    def __init__(
        self,
        settings: Settings,
        registration: NodeRegistration,
        *,
        state: SiteState,
        cloud: HeartbeatClient | None,
        role: Callable[[], str] = lambda: "worker",
        epoch: Callable[[], int] = lambda: 0,
        credential_status: Callable[[], str] = lambda: "none",
        extras: Callable[[], dict[str, Any]] | None = None,
        outbox: ReportOutbox | None = None,
        reporter: Reporter | None = None,
        sender: OutboxSender | None = None,
        store_health: Callable[[], dict[str, str]] | None = None,
        on_foreign: Callable[[ForeignRedis], None] | None = None,
        on_answer: Callable[[dict[str, Any]], None] | None = None,
        worker_grace: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.node = registration.node
        self.gateway = registration.gateway
        self.state = state
        self.cloud = cloud
        self.role = role
        self.epoch = epoch
        self.credential_status = credential_status
        self.extras = extras
        self.outbox = outbox
        self.reporter = reporter
        self.sender = sender
        self.store_health = store_health
        self.on_foreign = on_foreign
        self.on_answer = on_answer
        self.worker_grace = worker_grace
        self.clock = clock
        self.started = clock()
        self.cloud_reachable = True
        self.cloud_answer: dict[str, Any] | None = None
        self.cloud_refused = False  # the cloud's last answer refused this node's token
        self.last_beat: dict[str, Any] | None = None
        self._load_seen: float | None = None  # when a worker load was last seen (or unknowable)
        self._net = _NetRate(clock)
        self._tree = ProcessTree()
        self._peers_asked = False
        self._proxy_changed = False  # the last answer's proxy was new: applied since that answer
        self.proxy_file = proxy_path(node_dir(settings.data_dir, self.node))
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self._loop = Periodic(self.beat_once, interval=self.settings.heartbeat_interval,
                              name=f"dmg-agent-{self.node}", what="heartbeat")

    # -- one beat ------------------------------------------------------------------------
    def build_heartbeat(self) -> dict[str, Any]:
        """The heartbeat as of now (reads the worker load from Redis; never raises for
        an outage, it lists it in ``problems``)."""
        problems: list[str] = []
        load: dict[str, Any] | None = None
        try:
            load = self.state.worker_load(self.node)
        except BrokerError as exc:
            log.warning("broker unreachable node=%s error=%s", self.node, exc)
            problems.append(BROKER_UNREACHABLE)
        if load is None and not problems and self.clock() - self.started > self.worker_grace:
            problems.append(WORKER_NOT_RESPONDING)
        pool_running = self._pool_running(load, broker_down=BROKER_UNREACHABLE in problems)
        if not self.cloud_reachable:
            problems.append(CLOUD_UNREACHABLE)
        backlog = self._outbox_size() if BROKER_UNREACHABLE not in problems else 0
        if self.sender is not None and not self.sender.stuck():
            backlog = 0  # reports in flight, not waiting: the sender keeps up
        if backlog:
            problems.append(f"{backlog} {REPORTS_WAITING}")
        held = self._held_long() if BROKER_UNREACHABLE not in problems else 0
        if held:
            problems.append(f"{held} {REPORTS_HELD} for over {HELD_PROBLEM_AFTER:g} s")
        stores = self._stores_unreachable()
        problems += [store_problem(name, why) for name, why in sorted(stores.items())][:MAX_STORE_PROBLEMS]
        network_in, network_out = self._net.rates()
        role = self._role()
        beat: dict[str, Any] = {
            "node": self.node,
            "gateway": self.gateway,
            "version": __version__,
            # This node's worker runs packed messages (dmg.copy_shards) of this many shards.
            PACKED_CAPABILITY: MAX_CARRIED,
            "role": role,
            "epoch": self._epoch() if role == "dispatcher" else 0,
            "running": int(load["running"]) if load else 0,
            "limit": int(load["limit"]) if load else 0,
            "pool_running": pool_running,
            "cpu_percent": float(psutil.cpu_percent(interval=None)),
            "memory_available": int(psutil.virtual_memory().available),
            "network_in": network_in,
            "network_out": network_out,
            "problems": problems,
            "credential_status": self.credential_status(),
            "draining": False,
            "stores_unreachable": sorted(stores),
            "stopped": False,
            "encryption": encryption_mode(self.settings),
            "ts": self.clock(),
            **self._own_figures(broker_down=BROKER_UNREACHABLE in problems),
            **self._config(),
            "peers_seen": self._peers_seen(broker_down=BROKER_UNREACHABLE in problems),
            # The cloud's word, unless it was about a proxy this node applied since.
            "inactive": bool(self.cloud_answer and self.cloud_answer.get("status") == INACTIVE
                             and not self._proxy_changed),
        }
        if self.extras is not None:
            beat.update(self.extras())
        return beat

    def _config(self) -> dict[str, Any]:
        parts = config_parts(self.settings, encryption=encryption_mode(self.settings),
                             proxy=dmg_proxy.read(self.proxy_file))
        return {"config": parts, "config_fingerprint": config_hash(parts)}

    def _peers_seen(self, *, broker_down: bool) -> list[str] | None:
        """The other nodes with a live heartbeat in this node's broker; None when unknown: the
        broker is unreachable, or this is the first beat (nodes started together have not all
        beaten yet; by the second beat, one interval later, they have)."""
        first, self._peers_asked = not self._peers_asked, True
        if broker_down or first:
            return None
        try:
            return sorted(name for name in self.state.heartbeats() if name != self.node)
        except BrokerError:
            return None

    def _own_figures(self, *, broker_down: bool) -> dict[str, Any]:
        cpu, rss = self._tree.sample()
        moved_in = moved_out = 0
        if not broker_down:
            try:
                moved_in, moved_out = self.state.moved(self.node)
            except BrokerError as exc:
                log.warning("cannot read the bytes moved node=%s error=%s", self.node, exc)
        return {"proc_cpu_percent": cpu, "proc_mem_bytes": rss,
                "moved_in_bytes": moved_in, "moved_out_bytes": moved_out}

    def _apply_proxy(self, answer: dict[str, Any] | None) -> None:
        """Apply the gateway's proxy the cloud's reply carries (absent: an older cloud)."""
        self._proxy_changed = False
        if not isinstance(answer, dict) or "proxy" not in answer:
            return
        try:
            if dmg_proxy.apply(self.proxy_file, str(answer.get("proxy") or "")):
                self._proxy_changed = True
                log.info("gateway proxy applied node=%s proxy=%s", self.node,
                         redact_url(str(answer.get("proxy") or "")))
        except OSError as exc:
            log.warning("cannot apply the gateway proxy node=%s error=%s", self.node, exc)

    def _stores_unreachable(self) -> dict[str, str]:
        if self.store_health is None:
            return {}
        try:
            return dict(self.store_health())
        except Exception:  # store checks must never stop a heartbeat
            log.exception("cannot tell which stores are unreachable")
            return {}

    def _pool_running(self, load: dict[str, Any] | None, *, broker_down: bool) -> bool:
        now = self.clock()
        if broker_down:  # unknowable: not known to be gone
            if self._load_seen is not None:
                self._load_seen = now
            return self._load_seen is not None
        if load is not None:
            self._load_seen = now
            return int(load.get("limit") or 0) > 0
        return self._load_seen is not None and now - self._load_seen <= LOAD_MISSING_GRACE

    def _epoch(self) -> int:
        try:
            return int(self.epoch())
        except Exception:  # the epoch must never stop a heartbeat
            log.exception("cannot tell the dispatcher lease's epoch")
            return 0

    def _role(self) -> str:
        try:
            return self.role()
        except Exception:  # the role must never stop a heartbeat
            log.exception("cannot tell the node's role")
            return "worker"

    def beat_once(self) -> dict[str, Any]:
        """Build one heartbeat and publish it to Redis and the cloud; returns it."""
        beat = self.build_heartbeat()
        try:
            self.state.publish_heartbeat(self.node, {**beat, **self._cloud_view()},
                                         ttl=self.settings.offline_after)
        except ForeignRedis as exc:
            log.error("%s", exc)
            if self.on_foreign is not None:
                self.on_foreign(exc)
            return beat
        except BrokerError as exc:
            log.warning("heartbeat not published to the broker node=%s error=%s", self.node, exc)
            if BROKER_UNREACHABLE not in beat["problems"]:
                beat["problems"].append(BROKER_UNREACHABLE)
        self._send_to_cloud(beat)
        self.last_beat = beat
        return beat

    def _cloud_view(self) -> dict[str, Any]:
        """The status and reasons the cloud answered to the previous beat (for Flower:
        :mod:`workers.agent.flowerinfo`); nothing before the first answer."""
        if not self.cloud_answer:
            return {}
        return {"cloud_status": self.cloud_answer.get("status", ""),
                "cloud_reasons": list(self.cloud_answer.get("reasons") or [])}

    def _send_to_cloud(self, beat: dict[str, Any]) -> None:
        if self.cloud is None:
            return
        # A beat the cloud receives proves the cloud reachable: do not send the old problem.
        sent = {**beat, "problems": [p for p in beat["problems"] if p != CLOUD_UNREACHABLE]}
        try:
            self.cloud_answer = self.cloud.heartbeat(sent)
        except Unauthorized as exc:  # the cloud answers: it no longer knows this node
            if not self.cloud_refused:
                log.warning("heartbeat refused by the cloud node=%s error=%s", self.node, exc)
            self.cloud_refused = True
            return
        except DmgError as exc:
            if self.cloud_reachable:
                log.warning("heartbeat not delivered to the cloud node=%s error=%s", self.node, exc)
            self.cloud_reachable = False
            return
        self.cloud_refused = False
        self._apply_proxy(self.cloud_answer)
        if self.on_answer is not None and isinstance(self.cloud_answer, dict):
            self.on_answer(self.cloud_answer)  # what the portal asked (workers.agent.requests)
        if not self.cloud_reachable:
            log.info("cloud reachable again node=%s", self.node)
        self.cloud_reachable = True
        self._flush_outbox()

    def _outbox_size(self) -> int:
        if self.outbox is None:
            return 0
        try:
            return self.outbox.size()
        except BrokerError:
            return 0

    def _held_long(self) -> int:
        if self.outbox is None:
            return 0
        try:
            return self.outbox.held_since(time.time() - HELD_PROBLEM_AFTER)
        except BrokerError:
            return 0

    def _flush_outbox(self) -> None:
        if self.sender is not None:
            return  # its own thread delivers the outbox as reports come
        if self.outbox is None or self.reporter is None:
            return
        try:
            delivered = self.outbox.flush(self.reporter, max_seconds=self.settings.heartbeat_interval)
        except BrokerError as exc:
            log.warning("cannot read the report outbox node=%s error=%s", self.node, exc)
            return
        if delivered:
            log.info("delivered %d queued shard reports node=%s", delivered, self.node)

    # -- the thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()
        if self.sender is not None:
            self.sender.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._loop.stop(timeout)
        if self.sender is not None:
            self.sender.stop(timeout)

    def say_stopped(self, timeout: float = 10.0, *, restarting: bool = False) -> None:
        """Stop beating, then send one last beat saying the node stopped (best effort: an
        unreachable broker or cloud is logged, never raised). ``restarting``: it stops to
        restart on a new version; the beat says draining, not stopped (it stays Upgrading)."""
        self._loop.stop(timeout)
        beat = {**self.build_heartbeat(), "role": "worker", "epoch": 0, "stopped": not restarting,
                "draining": True}
        try:
            self.state.publish_heartbeat(self.node, beat, ttl=self.settings.offline_after)
        except (BrokerError, ForeignRedis) as exc:
            log.warning("stop not published to the broker node=%s error=%s", self.node, exc)
        if self.cloud is None:
            return
        try:
            self.cloud.heartbeat({**beat, "problems": [p for p in beat["problems"]
                                                       if p != CLOUD_UNREACHABLE]})
        except DmgError as exc:
            log.warning("stop not reported to the cloud node=%s error=%s", self.node, exc)
        else:
            log.info("told the cloud this node stopped node=%s", self.node)
