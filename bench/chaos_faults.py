"""The faults of the chaos run, and how long the site took to get over each.

:meth:`Faults.kill_and_restart` SIGKILLs every process of a node at once
(:meth:`SiteUnderTest.kill_node`), then watches the site state in Redis every
20 ms until

- every shard the node held (queued or running, read just before and just after
  the kill) runs again elsewhere: it is ``running`` under a newer attempt on
  another node, or it is finished (``done``/``failed``, also when the node had
  finished it before it died);
- if it was the dispatcher's node: another node holds the lease (higher epoch),
  and a shard in some node's queued or running set carries an epoch newer than
  the old dispatcher's (the new dispatcher's first placement or re-issue);

it also notes when every such shard was *placed* again (a newer attempt queued or
running on another node), which comes before it runs when the other nodes' slots
are all busy;

With ``pause=True`` the node's processes are SIGSTOPped instead (a machine that
vanishes without closing its connections: only the heartbeat timeout and the lease
TTL notice it) and SIGKILLed once the watch is over.

then starts the node again (:meth:`SiteUnderTest.start_node`) and waits until the
cloud shows it ready. :meth:`Faults.pick` with ``dispatcher=True`` waits until some
node holds the dispatcher lease and returns that node, so a dispatcher kill always
hits the dispatcher. :meth:`Faults.restart_redis` stops the site's Redis (SIGTERM,
AOF written), starts it again ``down_for`` seconds later, and waits until every node
is ready again.

:meth:`Faults.dead_processes` says which node processes are gone: every node's
``dmg node start`` process and its Celery worker, as started with the site or
restarted after a kill (pid and start time, so a reused pid does not count). A node
whose worker died after a Redis restart shows up there even if it looked ready once.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from dmg.embedded.faults import SiteUnderTest
from dmg.embedded.readiness import node_ready
from dmg.errors import BrokerUnreachable, Retryable
from dmg.shards.status import STATE_DONE, STATE_FAILED, STATE_QUEUED, STATE_RUNNING
from dmg.site.connection import redis_client
from dmg.site.state import SiteState

POLL = 0.02
#: After a dispatcher kill, seconds with nothing pending after which "next placement"
#: is given up (there was nothing left to place).
NOTHING_TO_PLACE = 5.0


@dataclass
class KillRecord:
    index: int
    node: str
    dispatcher: bool  # the node held the dispatcher lease when it was killed
    shards: int  # queued or running on it at the kill
    paused: bool = False  # SIGSTOP (then SIGKILL after the watch) instead of SIGKILL
    at_s: float = 0.0  # when, in seconds since the faults began
    requeued_s: float | None = None  # kill -> all of them given a new attempt (the death noticed)
    replaced_s: float | None = None  # kill -> all of them placed again on other nodes (new attempts)
    elsewhere_s: float | None = None  # kill -> all of them running (or finished) elsewhere
    new_lease_s: float | None = None  # kill -> another node holds the lease
    placement_s: float | None = None  # kill -> first placement by the new dispatcher
    successor: str = ""
    back_online_s: float | None = None  # restart -> the node ready again

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RedisRecord:
    down_s: float  # how long Redis was away
    online_s: float | None  # Redis back -> every node ready
    free_slot_node: str = ""  # a node running shards with a free slot when Redis stopped

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    """Fault injection on a running :class:`SiteUnderTest`; close() at the end."""

    def __init__(self, site: SiteUnderTest, *, rng: random.Random, timeout: float = 90.0,
                 echo: Callable[[str], None] = lambda _line: None) -> None:
        self.began = time.monotonic()
        self.site = site
        self.rng = rng
        self.timeout = timeout
        self.echo = echo
        self.client = redis_client(site.settings, timeout=2.0)
        self.state = SiteState(self.client, site.gateway)
        self.kills: list[KillRecord] = []
        self.redis_restarts: list[RedisRecord] = []
        self.last_fault = time.monotonic()
        #: node -> its processes this run started or restarted: role -> (pid, start time)
        self.processes: dict[str, dict[str, tuple[int, float]]] = {}
        self.died_before_kill: list[str] = []
        for node in site.node_names:
            self.record_processes(node)

    def close(self) -> None:
        self.client.close()

    # -- reading the site state (an outage reads as "nothing yet") --------------------------
    def _read(self, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except BrokerUnreachable:
            return default

    def dispatcher(self) -> str:
        raw = self._read(lambda: self.client.get(self.state.keys.lease), None)
        return raw.decode().rsplit(":", 1)[0] if raw else ""

    def epoch(self) -> int:
        return int(self._read(lambda: self.client.get(self.state.keys.epoch), 0) or 0)

    def work_of(self, node: str) -> set[str]:
        return self._read(lambda: self.state.queued(node) | self.state.running(node), set())

    def _fields(self, shard_ids: Iterable[str], *names: str) -> dict[str, list[str]]:
        ids = list(shard_ids)

        def read() -> dict[str, list[str]]:
            pipe = self.client.pipeline(transaction=False)
            for shard_id in ids:
                pipe.hmget(self.state.keys.shard(shard_id), list(names))
            return {shard_id: [v.decode() if isinstance(v, bytes) else (v or "") for v in values]
                    for shard_id, values in zip(ids, pipe.execute(), strict=True)}
        return self._read(read, {}) if ids else {}

    # -- the node processes, by pid ------------------------------------------------------------
    def record_processes(self, node: str) -> None:
        """Remember the live processes of ``node``: ``dmg node start`` and its Celery worker."""
        found: dict[str, tuple[int, float]] = {}
        pid = self.site.pid_of(node)
        with_children: list[tuple[str, psutil.Process]] = []
        with contextlib.suppress(psutil.Error):
            if pid is not None:
                proc = psutil.Process(pid)
                with_children.append(("node", proc))
                with_children.extend(("worker", child) for child in proc.children()
                                     if "celery" in " ".join(child.cmdline()))
        for role, proc in with_children:
            with contextlib.suppress(psutil.Error):
                found[role] = (proc.pid, proc.create_time())
        self.processes[node] = found

    def _dead_of(self, node: str) -> list[str]:
        recorded = self.processes.get(node, {})
        dead = []
        for role in ("node", "worker"):
            if role not in recorded:
                dead.append(f"{node}: no {role} process was found")
            elif not _alive(*recorded[role]):
                dead.append(f"{node}: {role} process {recorded[role][0]} is gone")
        return dead

    def dead_processes(self) -> list[str]:
        """The node processes that died by themselves: the recorded ones no longer alive
        (or never found), and those found dead when their node was about to be killed."""
        return [*self.died_before_kill, *(d for node in self.site.node_names for d in self._dead_of(node))]

    def process_count(self) -> int:
        return sum(len(roles) for roles in self.processes.values())

    # -- choosing a victim ---------------------------------------------------------------------
    def pick(self, *, dispatcher: bool) -> str:
        """The dispatcher's node (waiting up to the timeout for one to hold the lease, e.g.
        just after a Redis restart), or a random other node (one holding work if any does)."""
        leader = self.dispatcher()
        if dispatcher:
            deadline = time.monotonic() + self.timeout
            while not leader and time.monotonic() < deadline:
                time.sleep(POLL)
                leader = self.dispatcher()
            if leader:
                return leader
        others = [n for n in self.site.node_names if n != leader] or list(self.site.node_names)
        busy = [n for n in others if self.work_of(n)]
        return self.rng.choice(busy or others)

    # -- faults ----------------------------------------------------------------------------------
    def kill_and_restart(self, node: str, *, pause: bool = False) -> KillRecord:
        leader = self.dispatcher()
        epoch = self.epoch()
        before = self.work_of(node)
        self.died_before_kill.extend(f"{dead} (found before kill {len(self.kills) + 1})"
                                     for dead in self._dead_of(node))
        attempts = {s: int(v[0] or 0) for s, v in self._fields(before, "attempt").items()}
        killed = time.monotonic()
        dead_pids = set(self._pause(node) if pause else self.site.kill_node(node))
        after = self.work_of(node) - set(attempts)
        attempts.update({s: int(v[0] or 0) for s, v in self._fields(after, "attempt").items()})
        record = KillRecord(len(self.kills) + 1, node, dispatcher=leader == node, shards=len(attempts),
                            paused=pause, at_s=round(killed - self.began, 2))
        self.kills.append(record)
        self._watch(record, attempts, killed=killed, old_epoch=epoch)
        if pause:
            dead_pids |= set(self.site.kill_node(node))
        restarted = time.monotonic()
        self.site.start_node(node)
        if self.wait_ready([node], new_worker={node: dead_pids}):
            record.back_online_s = time.monotonic() - restarted
        self.record_processes(node)
        self.last_fault = time.monotonic()
        self.echo(f"[{record.at_s:6.1f} s] {'stop' if pause else 'kill'} {record.index}: {node}"
                  f"{' (dispatcher)' if record.dispatcher else ''} holding {record.shards} shard(s): "
                  f"new attempts {_fmt(record.requeued_s)}, placed elsewhere {_fmt(record.replaced_s)}, "
                  f"running elsewhere {_fmt(record.elsewhere_s)}"
                  + (f", new lease {_fmt(record.new_lease_s)} ({record.successor}), "
                     f"next placement {_fmt(record.placement_s)}" if record.dispatcher else "")
                  + f"; restarted, ready in {_fmt(record.back_online_s)}")
        return record

    def _pause(self, node: str) -> list[int]:
        """SIGSTOP every process of ``node`` at once; returns their pids."""
        import psutil

        pids = self.site.node_pids(node)
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).send_signal(signal.SIGSTOP)
        return pids

    def _watch(self, record: KillRecord, attempts: dict[str, int], *, killed: float, old_epoch: int) -> None:
        """Poll until the node's shards run elsewhere and, for the dispatcher's node, until the
        new dispatcher placed something -- or, once the rest is over, until
        :data:`NOTHING_TO_PLACE` s pass with nothing pending (the placement stays None)."""
        deadline = killed + self.timeout
        idle_since: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if record.requeued_s is None and self._all_requeued(attempts):
                record.requeued_s = now - killed
            if record.replaced_s is None and self._all_moved(record.node, attempts, running=False):
                record.replaced_s = now - killed
            if record.elsewhere_s is None and self._all_moved(record.node, attempts, running=True):
                record.elsewhere_s = now - killed
            if record.dispatcher:
                if record.new_lease_s is None and self.epoch() > old_epoch:
                    record.new_lease_s, record.successor = now - killed, self.dispatcher()
                if record.placement_s is None and self._placed_after(old_epoch):
                    record.placement_s = now - killed
                    if record.new_lease_s is None:  # taken between the two reads
                        record.new_lease_s, record.successor = record.placement_s, self.dispatcher()
            rest_done = record.elsewhere_s is not None and (
                not record.dispatcher or record.new_lease_s is not None)
            if rest_done and (not record.dispatcher or record.placement_s is not None):
                return
            if rest_done and not self._read(self.state.pending, ["?"]):
                idle_since = idle_since or now
                if now - idle_since > NOTHING_TO_PLACE:
                    return
            else:
                idle_since = None
            time.sleep(POLL)

    def _all_requeued(self, attempts: dict[str, int]) -> bool:
        """Whether every shard in ``attempts`` has a newer attempt (pending included) or is finished."""
        fields = self._fields(attempts, "state", "attempt")
        return len(fields) == len(attempts) and all(
            state in (STATE_DONE, STATE_FAILED) or int(attempt or 0) > attempts[shard_id]
            for shard_id, (state, attempt) in fields.items())

    def _all_moved(self, dead: str, attempts: dict[str, int], *, running: bool) -> bool:
        """Whether every shard in ``attempts`` has a newer attempt on another node (running,
        with ``running``), or is finished."""
        fields = self._fields(attempts, "state", "attempt", "node")
        if len(fields) != len(attempts):
            return False
        for shard_id, (state, attempt, node) in fields.items():
            if state in (STATE_DONE, STATE_FAILED):
                continue
            if running and state != STATE_RUNNING:
                return False
            if state not in (STATE_QUEUED, STATE_RUNNING):
                return False
            if int(attempt or 0) <= attempts[shard_id] or node in ("", dead):
                return False
        return True

    def _placed_after(self, old_epoch: int) -> bool:
        members: set[str] = set()
        for node in self.site.node_names:
            members |= self.work_of(node)
        return any(int(epoch or 0) > old_epoch for (epoch,) in self._fields(members, "epoch").values())

    def _has_free_slot(self, node: str) -> bool:
        load = self.state.worker_load(node) or {}
        running = len(self.state.running(node))
        return 0 < running < int(load.get("limit") or 0) and not self.state.queued(node)

    def restart_redis(self, *, down_for: float = 1.0, free_slot_wait: float = 10.0) -> RedisRecord:
        """Stop Redis (SIGTERM) and start it again ``down_for`` s later. It stops, if that
        comes within ``free_slot_wait`` s, when some node runs shards and has a free slot
        with nothing queued: its worker then waits on the broker with unacknowledged
        messages, the case kombu 5.7.0 killed workers in (see ``workers/brokerloss.py``)."""
        free_slot_node = self._wait_free_slot(free_slot_wait)
        stopped = time.monotonic()
        self.site.stop_redis()
        time.sleep(down_for)  # the outage itself (the bench's own pause, not a wait for a condition)
        self.site.start_redis()
        back = time.monotonic()
        record = RedisRecord(down_s=back - stopped, online_s=None, free_slot_node=free_slot_node)
        if self.wait_ready(self.site.node_names):
            record.online_s = time.monotonic() - back
        self.redis_restarts.append(record)
        self.last_fault = back
        self.echo(f"[{stopped - self.began:6.1f} s] redis restarted: down {record.down_s:.1f} s"
                  f"{f' ({free_slot_node} running with a free slot)' if free_slot_node else ''}, "
                  f"every node ready {_fmt(record.online_s)} after it was back")
        return record

    def _wait_free_slot(self, timeout: float) -> str:
        """The first node seen running shards below its limit with an empty queue, or ""."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.site.node_names:
                if self._read(lambda: self._has_free_slot(node), False):  # noqa: B023 - called at once
                    return node
            time.sleep(POLL)
        return ""

    def wait_ready(self, names: Iterable[str], *, new_worker: dict[str, set[int]] | None = None) -> bool:
        """Poll until the nodes ``names`` are ready: the cloud shows them Online with a job
        limit and, for a node in ``new_worker``, its worker publishes its load from processes
        other than the given (killed) pids. False after the timeout."""
        wanted = set(names)
        deadline = time.monotonic() + self.timeout
        with self.site.client() as client:
            while time.monotonic() < deadline:
                try:
                    rows = {str(r.get("name")): r for r in client.list_nodes(self.site.gateway)}
                except Retryable:
                    rows = {}
                if all(node_ready(rows.get(n, {})) for n in wanted) and all(
                        self._fresh_worker(n, pids) for n, pids in (new_worker or {}).items()):
                    return True
                time.sleep(0.1)
        return False

    def _fresh_worker(self, node: str, dead_pids: set[int]) -> bool:
        load = self._read(lambda: self.state.worker_load(node), None)
        return bool(load and load.get("limit") and load.get("pids")
                    and not set(load["pids"]) & dead_pids)


def _alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` started at ``started`` still runs (a zombie does not)."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _fmt(seconds: float | None) -> str:
    return "timed out" if seconds is None else f"{seconds:.2f} s"

