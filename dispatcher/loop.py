"""``DispatcherService``: the dispatcher candidate every node runs.

A candidate thread tries the lease (:mod:`dispatcher.lease`) until it wins. While
it holds the lease it renews it every ``lease_ttl / 3`` s, places pending shards
every ``placement_interval`` s (:mod:`dispatcher.placement`) and moves the queued
and running shards of offline nodes (and shards whose process vanished from a
live node) back to pending with new attempts (:mod:`dispatcher.recovery`); a
second thread long-polls the cloud for activity runs with the lease's epoch and
hands each to a pool of ``planners`` threads (:mod:`dispatcher.planner`): several
plans are in flight at once (listing the source; the plan goes to the cloud in the
lease holder's report batches, :mod:`dispatcher.reports`), and
the claimer claims again while they run, with at most twice ``claim_limit`` claimed
runs not yet planned. On an idle site (nothing in flight, the cloud had no more) it first
lets the batch be planned and placed, for at most ``idle_follow`` s: its next request would
take the process's CPU from them. Every plan carries the epoch it was claimed with; a plan whose
lease was lost meanwhile is dropped (the next dispatcher takes the run back). When a
renewal fails, or the local lease deadline passes, placement stops at once and the
candidate competes again.

Fast death detection (:mod:`dmg.site.presence`): every ``presence_interval`` s the
candidate lists the broker's named connections. The leader expires the heartbeat of
a node whose processes all lost their connections and moves its shards at once
(:func:`dispatcher.recovery.retire_gone`); a standby that sees the lease holder's
node gone breaks the lease (:meth:`dispatcher.lease.Lease.break_dead`) and takes it,
instead of waiting ``lease_ttl`` s. A node or dispatcher that stops without closing
its connections (SIGSTOP, a machine or network gone) is still found by the heartbeat
timeout and the lease TTL.

Taking over from a dead dispatcher (:func:`dispatcher.recovery.take_over`): the new one
re-issues the shards queued on live nodes (their message may never have been sent),
replays the plans its predecessor had not finished pushing, and claims with a higher
epoch, which takes back from the cloud the activity runs the old epoch claimed but never
planned. After a broker outage or restart (a failed round trip, or a new ``run_id`` seen
by the presence look), once the broker has been back ``offline_after`` s, the lease
holder re-issues the shards queued on live nodes the same way: a worker that had taken a
message when its connection broke has dropped it, and kombu leaves it to the visibility
timeout.

Before each claim it applies the runs users cancelled (:mod:`dispatcher.cancels`). Every
attempt it makes and every message it sends carries its epoch; a dispatcher whose epoch
was superseded can make none.

A candidate whose node is flagged removed (``dmg node remove``; the node flags itself
when the cloud refuses its token) gives the lease up and stops competing: its claims
would be refused, and the gateway must not stall behind it.

Usable as a :class:`workers.agent.node.NodeRuntime` service (``start()``/``stop()``);
:meth:`DispatcherService.role` tells the node agent "dispatcher" or "worker".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery

from dispatcher.brokerwatch import BrokerWatch
from dispatcher.cancels import CancelWatch
from dispatcher.fresh import FreshShards
from dispatcher.lease import Lease, holder_of
from dispatcher.messages import ShardMessages
from dispatcher.placement import Placer
from dispatcher.planner import plan_activity_run
from dispatcher.ports import DispatchCloud, TaskSender
from dispatcher.rebalance import Rebalancer
from dispatcher.recovery import (
    OrphanWatch,
    StrandedWatch,
    reissue_queued,
    requeue_gone,
    requeue_offline,
    retire_gone,
    take_over,
)
from dispatcher.reports import PlacementOutbox, PlacementSender
from dispatcher.slots import FreeSlots
from dmg.cloud.client import CloudClient
from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.errors import BrokerError, DmgError, Retryable, StaleAttempt
from dmg.registration import NodeRegistration
from dmg.site.connection import redis_client
from dmg.site.identity import SiteIdentity
from dmg.site.presence import PresenceWatch, client_name
from dmg.site.state import DRAIN_REMOVED, SiteState
from settings import Settings, proxy_in_environment
from settings.celery import celery_config

log = logging.getLogger(__name__)

DISPATCHER = "dispatcher"
WORKER = "worker"

#: Seconds the claimer waits, at most, for a batch claimed on an idle site to be planned and
#: placed before it claims again (:meth:`DispatcherService._follow_idle_batch`).
IDLE_FOLLOW = 0.05


def make_sender(settings: Settings, *, client_name: str = "") -> Celery:
    """A Celery app used only to send tasks by name (no task code imported).

    It has no result backend: the dispatcher never reads a task's result (the workers
    still store theirs). With one, Celery 5.7's Redis backend subscribes to every sent
    task's result channel before the message goes out (``RedisBackend.on_task_call``): a
    command on the placement path, and a pub/sub message to read and an unsubscribe later,
    for every shard.
    """
    app = Celery("dmg-dispatcher", set_as_current=False)
    app.conf.update(celery_config(settings, client_name=client_name))
    app.conf.result_backend = None  # the disabled backend: send_task subscribes to nothing
    return app


class DispatcherService:
    """One dispatcher candidate; see the module docstring. Not reusable after :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        node: str,
        *,
        state: SiteState,
        cloud: DispatchCloud,
        sender: TaskSender,
        connector_factory: Callable[[StoreSpec], Connector] = connector_for,
        placement_interval: float = 0.2,
        recovery_interval: float = 1.0,
        presence_interval: float = 0.5,
        claim_limit: int = 16,
        planners: int = 4,
        idle_follow: float = IDLE_FOLLOW,
    ) -> None:
        self.settings = settings
        self.node = node
        self.state = state
        self.cloud = cloud
        self.sender = sender
        self.connector_factory = connector_factory
        self.owned: list[Any] = []  # clients built by from_settings, closed by stop()
        self.placement_interval = placement_interval
        self.recovery_interval = recovery_interval
        self.presence_interval = presence_interval
        self.claim_limit = claim_limit
        self.idle_follow = idle_follow
        self.lease = Lease(state.redis, key=state.keys.lease, epoch_key=state.keys.epoch,
                           holder=node, ttl=settings.lease_ttl, identity_key=state.keys.identity,
                           identity_token=state.identity.token if state.identity else "")
        # Plans and placement reports wait in Redis (a placement written before the message
        # goes out); the lease's holder sends them, whoever wrote them (:mod:`dispatcher.reports`).
        self.reports = PlacementOutbox(state)
        self.report_sender = PlacementSender(state, cloud, epoch=self.lease_epoch, wake=self.reports.recorded)
        # After a broker outage, missing heartbeats prove nothing until nodes beat again.
        self.broker = BrokerWatch(settings.offline_after)
        self.slots = FreeSlots(state)  # read once for the planners of a claimed batch
        self.fresh = FreshShards()  # planned here, placed without a read back (dispatcher.fresh)
        # A Celery sender on the site's Redis: each shard's message is written by its placement
        # script (dispatcher.messages); any other sender gets send_task.
        self.placer = Placer(state=state, sender=sender, cloud=self.reports, holding=self.lease.holding,
                             max_queued=settings.max_queued_per_node, epoch=lambda: self.lease.epoch,
                             messages=ShardMessages.of(sender), fresh=self.fresh,
                             max_carried=settings.max_carried_per_message)
        self.rebalancer = Rebalancer(self.placer)  # queued shards move to nodes with free slots
        self.orphans = OrphanWatch(grace=settings.offline_after)
        self.stranded = StrandedWatch(grace=settings.offline_after)
        self.cancels = CancelWatch(state, cloud)
        # Dead node processes, seen by their vanished Redis connections; a restarted Redis
        # is given two heartbeats (and a second) for every node to reconnect.
        self.presence = PresenceWatch(state.gateway, grace=2 * settings.heartbeat_interval + 1.0)
        self.gone: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._claimer: threading.Thread | None = None
        self._retry: list[tuple[dict[str, Any], int]] = []  # (activity run, epoch) to plan again
        self._retry_lock = threading.Lock()
        self._planners = ThreadPoolExecutor(max_workers=max(1, planners),
                                            thread_name_prefix=f"dmg-planner-{node}")
        # the ids of the claimed activity runs handed to the planners and not planned yet
        self._in_hand: Counter[str] = Counter()
        self._planned = threading.Condition()
        self._rounds = 0  # placement rounds ended (the claimer follows an idle batch's round)
        self._round_ended = threading.Condition()

    @classmethod
    def from_settings(cls, settings: Settings, registration: NodeRegistration,
                      **kwargs: Any) -> DispatcherService:
        """Wire the real Redis, cloud client (node token) and Celery sender."""
        # Short timeouts, no retries: a slow broker must cost the lease, not stall placement.
        timeout = max(0.5, settings.lease_ttl / 3)
        client = redis_client(settings, timeout=timeout,
                              client_name=client_name(registration.gateway, registration.node))
        state = SiteState(client, registration.gateway, identity=SiteIdentity.of(registration))
        # Plain keep-alive connections to an http:// cloud when no proxy applies (the gateway's
        # is asked before each request): the claim's answer is on the submit -> start path.
        cloud = CloudClient(registration.cloud_url, token=registration.token, ca=settings.cloud_ca,
                            plain_http=not proxy_in_environment())
        service = cls(settings, registration.node, state=state, cloud=cloud,
                      sender=make_sender(settings.replace(gateway=registration.gateway),
                                         client_name=client_name(registration.gateway, registration.node)),
                      **kwargs)
        service.owned = [cloud, client]
        return service

    # -- service -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._candidate, name=f"dmg-dispatcher-{self.node}",
                                        daemon=True)
        self._thread.start()
        self.report_sender.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop competing; give the lease up if held (another node takes over at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._claimer is not None:
            # The long-poll may still be waiting on the cloud; it sees the stop flag after.
            self._claimer.join(min(timeout, 1.0))
        # Plans not started are dropped (a new dispatcher takes their runs back); a plan
        # in flight sees the stop flag before it begins.
        self._planners.shutdown(wait=False, cancel_futures=True)
        try:
            self.lease.release()
        except BrokerError as exc:
            log.warning("could not release the dispatcher lease: %s", exc)
        self.report_sender.stop()
        for resource in self.owned:
            resource.close()
        self.owned = []

    def is_dispatcher(self) -> bool:
        return self.lease.holding()

    def role(self) -> str:
        return DISPATCHER if self.is_dispatcher() else WORKER

    def lease_epoch(self) -> int:
        """The lease's epoch while this node holds it, else 0 (heartbeats carry it)."""
        return self.lease.epoch if self.is_dispatcher() else 0

    # -- the candidate thread --------------------------------------------------------------
    def _removed(self) -> bool:
        """This node is flagged removed (raises BrokerError)."""
        return self.state.drained().get(self.node) == DRAIN_REMOVED

    def _candidate(self) -> None:
        retry_every = min(self.settings.lease_ttl / 3, self.presence_interval)
        while not self._stop.is_set():
            try:
                if self._removed():
                    if self.lease.holding():
                        log.warning("this node was removed; giving the dispatcher lease up node=%s",
                                    self.node)
                        self.lease.release()
                elif self.lease.holding():
                    self._lead()
                elif self.lease.acquire():
                    self.broker.reachable()
                    self._on_acquired()
                    continue
                else:
                    self.broker.reachable()
                    if self._break_dead_lease():
                        continue
            except BrokerError as exc:
                self.broker.failed()
                log.warning("dispatcher candidate cannot reach the broker node=%s error=%s", self.node, exc)
            except Exception:
                log.exception("dispatcher candidate error node=%s", self.node)
            self._stop.wait(retry_every)

    def _look(self) -> set[str]:
        """One presence look (:mod:`dmg.site.presence`); the nodes gone, also kept in :attr:`gone`."""
        self.gone = self.presence.look(self.state.redis)
        return self.gone

    def _break_dead_lease(self) -> bool:
        """Break the lease of a holder whose node is gone; True if broken (acquire at once)."""
        value = self.lease.current_value()
        if value is None:
            return False
        holder = holder_of(value)
        if holder == self.node or holder not in self._look():
            return False
        if not self.lease.break_dead(value):
            return False
        log.warning("the dispatcher's node is gone (no connection to the broker); taking over "
                    "node=%s dead=%s", self.node, holder)
        return True

    def _report_gone(self, nodes: list[str], epoch: int) -> None:
        """Tell the cloud (off the placement path) that ``nodes`` are gone: Offline at once."""
        def send() -> None:
            try:
                self.cloud.report_nodes_gone(nodes, epoch=epoch)
            except DmgError as exc:  # the heartbeat timeout makes them Offline anyway
                log.warning("cannot tell the cloud that nodes are gone nodes=%s error=%s", nodes, exc)
        threading.Thread(target=send, name="dmg-nodes-gone", daemon=True).start()

    def _on_acquired(self) -> None:
        epoch = self.lease.epoch
        log.info("became the dispatcher node=%s epoch=%d", self.node, epoch)
        try:
            # A dead predecessor's node (or any gone node) is offline before take-over, so
            # nothing is re-issued to it.
            retired = retire_gone(self.state, self.gone)
            if retired:
                self._report_gone(retired, epoch)
            _reissued, replay = take_over(self.state, self.placer, epoch=epoch)
        except BrokerError as exc:
            log.warning("take-over incomplete (broker) epoch=%d error=%s", epoch, exc)
        else:
            with self._retry_lock:
                self._retry.extend(({"id": run_id}, epoch) for run_id in sorted(replay))
        self._claimer = threading.Thread(target=self._claim_loop, args=(epoch,),
                                         name=f"dmg-claimer-{self.node}", daemon=True)
        self._claimer.start()

    def _lead(self) -> None:
        """Renew, place and recover until the lease is lost or the service stops."""
        renew_every = self.settings.lease_ttl / 3
        next_renew = time.monotonic() + renew_every
        next_recovery = 0.0
        next_look = 0.0
        epoch = self.lease.epoch
        woken = True  # work may be pending: the first round reads it with the site's load
        # Taken over while the broker was away or just back: nodes that had not beaten again
        # were skipped by the take-over's re-issue; do it again once they have.
        outages = None if not self.broker.settled() else self._outages()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_renew:
                if not self.lease.renew():
                    break
                next_renew = now + renew_every
            if not self.lease.holding():
                break
            try:
                if now >= next_recovery and self._removed():
                    break  # the candidate loop gives the lease up
                if now >= next_look and self.broker.settled():
                    next_look = now + self.presence_interval
                    retired = retire_gone(self.state, self._look())
                    if retired:
                        next_recovery = now  # move their shards in this round
                        self._report_gone(retired, epoch)
                if self.broker.settled() and outages != self._outages():
                    self._reissue_after_outage(epoch)
                    outages = self._outages()
                if now >= next_recovery and self.broker.settled():
                    requeue_offline(self.state, epoch=epoch)
                    requeue_gone(self.state, epoch=epoch)
                    self.orphans.check(self.state, epoch=epoch)
                    self.stranded.check(self.state, self.placer, epoch=epoch)
                    next_recovery = now + self.recovery_interval
                with self.reports.wake_after():
                    self.placer.place_pending(woken=woken)
                    self.rebalancer.rebalance()
                self.broker.reachable()
            except BrokerError as exc:
                self.broker.failed()
                log.warning("placement round failed (broker) error=%s", exc)
            finally:
                with self._round_ended:
                    self._rounds += 1
                    self._round_ended.notify_all()
            # Sleep until a slot frees or work arrives (or the interval passes).
            pause = min(self.placement_interval, max(next_renew - time.monotonic(), 0))
            try:
                woken = self.state.wait_for_change(pause)
            except BrokerError:
                self.broker.failed()
                self._stop.wait(pause)
                woken = True
        if not self._stop.is_set():
            log.warning("lost the dispatcher lease node=%s epoch=%d", self.node, epoch)

    def _outages(self) -> tuple[int, int]:
        """Broker outages this node saw: failed round trips, and restarts (a new ``run_id``)."""
        return self.broker.outages, self.presence.restarts

    def _reissue_after_outage(self, epoch: int) -> None:
        """After a broker outage or restart, re-issue every shard queued on a live node
        (:func:`dispatcher.recovery.reissue_queued`): a message a worker had taken when its
        connection broke is gone until the visibility timeout, and nothing else would
        place the shard again while its node lives."""
        reissued = reissue_queued(self.state, self.placer, epoch=epoch)
        if reissued:
            log.warning("re-issued %d queued shard(s) after a broker outage epoch=%d", len(reissued), epoch)

    # -- the claimer thread -------------------------------------------------------------
    def _holding(self, epoch: int) -> bool:
        return not self._stop.is_set() and self.lease.holding() and self.lease.epoch == epoch

    def _claim_loop(self, epoch: int) -> None:
        backoff = 1.0
        failed = False  # the last claim failed: its answer may have been lost after the cloud claimed
        most = 2 * self.claim_limit  # claimed and not yet planned, at most
        while self._holding(epoch):
            self.cancels.apply()
            self._plan_retries(epoch)
            with self._planned:  # room for a whole claim before claiming again
                self._planned.wait_for(lambda: self._planning <= most - self.claim_limit
                                       or self._stop.is_set(), timeout=1.0)
                room = min(self.claim_limit, most - self._planning)
            if room <= 0:
                continue
            try:
                # After a failed claim the cloud sends again what it claimed for this epoch and
                # this dispatcher does not hold: else those runs would wait for a failover.
                runs = self.cloud.claim_activity_runs(epoch=epoch, wait=self.settings.claim_wait,
                                                      limit=room, again=self._held() if failed else None)
            except StaleAttempt as exc:
                # The cloud saw a newer epoch than the lease gave us: the broker lost the
                # last epoch increments (a crash inside AOF's fsync window, a Sentinel
                # failover before replication). Give the lease up; the next acquisition
                # counts past it.
                log.warning("claim refused, epoch %d is stale (%s); taking a newer one", epoch, exc)
                self.lease.release()
                return
            except DmgError as exc:
                log.warning("cannot claim activity runs epoch=%d error=%s", epoch, exc)
                failed = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)  # a cloud back from an outage is used within 5 s
                continue
            # What is sent again is cut at ``room``: as many may leave more to send again.
            backoff, failed = 1.0, failed and sum(1 for run in runs if run.get("again")) >= room
            with self._planned:
                idle = self._planning == 0 and len(runs) < room  # the cloud had no more
            for run in runs:
                if not self._holding(epoch):
                    log.warning("claimed activity run %s dropped: lease lost", run.get("id"))
                    break
                self._submit(run, epoch)
            if runs and idle:
                self._follow_idle_batch()

    def _follow_idle_batch(self) -> None:
        """Wait, at most :attr:`idle_follow` s, until the batch just handed to idle planners
        is planned and a placement round has ended after that (its shards are placed, when a
        node has room): on an idle site the claimer's next long-poll request would otherwise
        take the process's CPU (the GIL) from the planner and then the placement thread, on
        the submit -> start path. A slow listing or a full site costs the next claim
        :attr:`idle_follow` s at most; nothing is skipped, only delayed."""
        deadline = time.monotonic() + self.idle_follow
        with self._planned:
            if not self._planned.wait_for(lambda: self._planning == 0 or self._stop.is_set(),
                                          timeout=self.idle_follow):
                return
        with self._round_ended:
            ended = self._rounds
            self._round_ended.wait_for(lambda: self._rounds > ended or not self.fresh or self._stop.is_set(),
                                       timeout=max(deadline - time.monotonic(), 0.0))

    def _submit(self, run: dict[str, Any], epoch: int) -> None:
        """Hand ``run`` to the planners (it is planned while the claimer claims on)."""
        run_id = str(run.get("id"))
        with self._planned:
            self._in_hand[run_id] += 1
        try:
            self._planners.submit(self._plan_and_count, run, epoch)
        except RuntimeError:  # the pool is shut down: the service is stopping
            self._done_planning(run_id)

    def _done_planning(self, run_id: str) -> None:
        with self._planned:
            self._in_hand[run_id] -= 1
            if self._in_hand[run_id] <= 0:
                del self._in_hand[run_id]
            self._planned.notify_all()

    @property
    def _planning(self) -> int:
        """How many claimed activity runs the planners hold (read under :attr:`_planned`)."""
        return self._in_hand.total()

    def _held(self) -> list[str]:
        """The ids of the claimed activity runs this dispatcher holds and the cloud has not
        seen planned: with its planners, waiting to be planned again, then planned with
        the plan on its way to the cloud. In that order: a run a planner defers is put in
        :attr:`_retry`, and a plan recorded, before the run leaves :attr:`_in_hand`, so a
        run is never in none of them. (A broker that does not answer leaves the plans out:
        those runs come again and replay their recorded plans.)"""
        with self._planned:
            held = set(self._in_hand)
        with self._retry_lock:
            held.update(str(run.get("id")) for run, _epoch in self._retry)
        try:
            held |= self.reports.unsent_plans()
        except BrokerError as exc:
            log.warning("plans on their way to the cloud not read error=%s", exc)
        return sorted(held)

    def _plan_and_count(self, run: dict[str, Any], epoch: int) -> None:
        try:
            if self._holding(epoch):
                self._plan(run, epoch)
            else:
                log.warning("claimed activity run %s dropped: lease lost", run.get("id"))
        finally:
            self._done_planning(str(run.get("id")))

    def _plan(self, run: dict[str, Any], epoch: int) -> None:
        try:
            plan_activity_run(run, state=self.state, cloud=self.cloud, epoch=epoch,
                              settings=self.settings, connector_factory=self.connector_factory,
                              outbox=self.reports, slots=self.slots, fresh=self.fresh)
        except (Retryable, BrokerError) as exc:
            log.warning("planning deferred activity_run=%s error=%s", run.get("id"), exc)
            with self._retry_lock:
                self._retry.append((run, epoch))
        except DmgError as exc:
            log.error("planning refused activity_run=%s error=%s", run.get("id"), exc)
        except Exception:  # a planner thread must outlive any one activity run
            log.exception("planning failed activity_run=%s", run.get("id"))

    def _plan_retries(self, epoch: int) -> None:
        with self._retry_lock:
            retries, self._retry = self._retry, []
        for run, claimed_epoch in retries:
            if claimed_epoch == epoch:
                self._submit(run, epoch)
