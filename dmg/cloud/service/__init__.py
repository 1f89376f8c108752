"""The cloud's rules, independent of HTTP: one method per use case, one transaction each.

Every method raises :mod:`dmg.errors` types; the API layer maps them to HTTP.
Write use cases run in :meth:`Database.write` (serialised on SQLite, row locks on
PostgreSQL); reads in :meth:`Database.read`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from dmg.cloud import keys
from dmg.cloud.db import Database
from dmg.cloud.schemas import (
    FileResults,
    Heartbeat,
    PipelineCreate,
    PlannedShard,
    ReportItem,
    ShardReport,
    StoreCreate,
)
from dmg.cloud.service import (
    attempts,
    batches,
    batchsets,
    cancel,
    credentials,
    dispatch,
    files,
    gateways,
    history,
    leader,
    metrics_read,
    noderequests,
    pipelines,
    reportcore,
    reportpage,
    runretention,
    sessions,
    stores,
    upgrades,
)
from dmg.cloud.service.gateways import NodeIdentity
from dmg.cloud.service.tokens import TokenCache
from dmg.errors import DmgError
from settings import Settings

__all__ = ["CloudService", "NodeIdentity"]

#: How many times a claim is tried when it meets another taking the gateway's lease, and
#: the longest pause (s) before the next try: each claimer draws its own pause, so two that
#: met and backed off alike do not meet again (both refused, each retrying in step, was
#: seen on PostgreSQL with two claimer threads).
CLAIM_TRIES = 5
CLAIM_RETRY_PAUSE = 0.04
#: PostgreSQL NOTIFY channels between cloud processes (:mod:`dmg.cloud.api.listen`):
#: a gateway's runs changed (payload: its id), a node token was revoked.
RUNS_CHANNEL = "dmg_runs"
TOKENS_CHANNEL = "dmg_tokens"

log = logging.getLogger(__name__)


class CloudService:
    def __init__(self, settings: Settings, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.db = db
        self.box = keys.KeyBox(settings)
        self.clock = clock
        self._compacted_at = 0.0
        # Several processes may share a PostgreSQL database: the cache is trusted only
        # while this process listens for revocations (dmg.cloud.api.listen).
        self.tokens = TokenCache(shared=db.dialect == "postgresql")

    @property
    def offline_after(self) -> float:
        return self.settings.offline_after

    @property
    def lease_ttl(self) -> float:
        """How long the cloud-side dispatcher lease outlives its holder's last call."""
        return self.settings.lease_ttl

    # -- gateways and nodes (users) -----------------------------------------------------
    def create_gateway(self, name: str) -> dict[str, Any]:
        with self.db.write() as session:
            return gateways.create_gateway(session, self.box, name, now=self.clock())

    def list_gateways(self, *, nodes: bool = False) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return gateways.list_gateways(session, now=self.clock(), offline_after=self.offline_after,
                                          nodes=nodes)

    def gateway(self, name: str) -> dict[str, Any]:
        with self.db.read() as session:
            return gateways.gateway_json(gateways.get_gateway(session, name), now=self.clock(),
                                         offline_after=self.offline_after, nodes=True)

    def gateway_keys(self, name: str) -> dict[str, str]:
        with self.db.read() as session:
            return gateways.gateway_keys(session, self.box, name)

    def regenerate_key(self, name: str, which: str) -> dict[str, str]:
        with self.db.write() as session:
            return gateways.regenerate_key(session, self.box, name, which)

    def set_encryption(self, name: str, mode: str) -> dict[str, Any]:
        with self.db.write() as session:
            return gateways.set_encryption(session, name, mode, now=self.clock(),
                                           offline_after=self.offline_after)

    def set_proxy(self, name: str, url: str) -> dict[str, Any]:
        with self.db.write() as session:
            return gateways.set_proxy(session, name, url, now=self.clock(), offline_after=self.offline_after)

    def list_nodes(self, gateway: str) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return gateways.list_nodes(session, gateway, now=self.clock(), offline_after=self.offline_after)

    def metrics(self) -> metrics_read.Snapshot:
        """What ``/metrics`` shows, read from the database now (:mod:`.metrics_read`)."""
        with self.db.read() as session:
            return metrics_read.snapshot(session, now=self.clock(), offline_after=self.offline_after)

    def remove_node(self, gateway: str, node: str) -> None:
        with self.db.write() as session:
            gateways.remove_node(session, gateway, node)
            self.db.publish(session, TOKENS_CHANNEL, "removed")  # every other cloud process
        self.tokens.clear()  # its token stops working at once (in this process)

    def request_upgrade(self, gateway: str, node: str) -> dict[str, Any]:
        with self.db.write() as session:
            return upgrades.request_upgrade(session, gateway, node, now=self.clock(),
                                            offline_after=self.offline_after)

    # -- stores, pipelines, runs (users) --------------------------------------------------
    def add_store(self, store: StoreCreate) -> dict[str, Any]:
        with self.db.write() as session:
            return stores.add_store(session, store, now=self.clock())

    def list_stores(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return stores.list_stores(session)

    def create_pipeline(self, pipeline: PipelineCreate) -> dict[str, Any]:
        with self.db.write() as session:
            return pipelines.create_pipeline(session, pipeline, now=self.clock())

    def list_pipelines(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return pipelines.list_pipelines(session)

    def start_run(self, pipeline: str, *,
                  claim_for: Callable[[int], Sequence[dispatch.WaitingClaim]] | None = None,
                  ) -> tuple[int, dict[str, Any], bool]:
        """-> (gateway id to wake its dispatcher, the run, whether a waiting long-poll was
        handed its activity runs: then it needs no wake-up).

        ``claim_for(gateway_id)``: takes the claim long-polls of the gateway that wait in
        this process (:mod:`dmg.cloud.api.handoff`). The first that may claim claims the
        new run in this transaction, with every rule of :func:`.dispatch.claim`; after the
        transaction each taken one is handed its answer (None: nothing claimed for it, or
        the transaction rolled back), exactly once."""
        taken: Sequence[dispatch.WaitingClaim] = ()
        answer: tuple[dispatch.WaitingClaim, dict[str, Any]] | None = None
        committed = False
        try:
            with self.db.write() as session:
                created = pipelines.create_run(session, pipeline, now=self.clock())
                gateway_id, run = created.gateway_id, created.run
                self.db.publish(session, RUNS_CHANNEL, str(gateway_id))  # claims waiting elsewhere
                if claim_for is not None:
                    taken = claim_for(gateway_id)
                    # The claim reads the run's pipeline and stores no more: read already.
                    answer = self._claim_at_creation(session, taken, read=dispatch.ReadAlready(
                        {str(run["id"]): created.pipeline}, created.stores))
            committed = True
            return gateway_id, run, answer is not None
        finally:
            for waiting in taken:
                waiting.hand(answer[1] if committed and answer is not None and answer[0] is waiting else None)

    def _claim_at_creation(self, session: Session, waiting: Sequence[dispatch.WaitingClaim], *,
                           read: dispatch.ReadAlready | None = None,
                           ) -> tuple[dispatch.WaitingClaim, dict[str, Any]] | None:
        """Claim for the first of ``waiting`` that claims something, in the run's own
        transaction; -> it and its long-poll's answer (what :meth:`claim_with_cancels`
        gives it). A refused claim (another node's cloud lease, a removed node, a stale
        epoch) is raised before the claim writes anything: that long-poll is handed
        nothing and hears the refusal from its own claim."""
        for one in waiting:
            now = self.clock()
            try:
                claimed = dispatch.claim(session, one.node, epoch=one.epoch, limit=one.limit, now=now,
                                         ttl=self.lease_ttl, read=read)
            except DmgError:
                continue
            if claimed:
                cancelled = cancel.cancelled_since(session, one.node, since=now - cancel.CANCEL_WINDOW)
                return one, {"activity_runs": claimed, "cancelled": cancelled}
        return None

    def list_runs(self, *, limit: int, shards: bool = False) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return pipelines.list_runs(session, limit=limit, shards=shards)

    def run(self, run_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            return pipelines.get_run(session, run_id)

    def run_attempts(self, run_id: str) -> list[dict[str, Any]]:
        """Every attempt of every shard of the run (:mod:`.attempts`)."""
        with self.db.read() as session:
            return attempts.run_attempts(session, run_id)

    def shard_attempts(self, shard_id: str) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return attempts.shard_attempts(session, shard_id)

    def cancel_run(self, run_id: str) -> tuple[int, dict[str, Any]]:
        """-> (gateway id to wake its dispatcher, the run); see :mod:`.cancel`."""
        with self.db.write() as session:
            gateway_id, run = cancel.cancel_run(session, run_id, now=self.clock())
            self.db.publish(session, RUNS_CHANNEL, str(gateway_id))
        return gateway_id, run

    # -- nodes ----------------------------------------------------------------------------
    def register_node(self, *, key: str, name: str, version: str, public_key: str = "",
                      expect_gateway_id: str = "") -> dict[str, Any]:
        with self.db.write() as session:
            return gateways.register_node(session, key=key, name=name, version=version,
                                          max_nodes=self.settings.max_nodes_per_gateway, now=self.clock(),
                                          public_key=public_key, expect_gateway_id=expect_gateway_id)

    def authenticate_node(self, token: str) -> NodeIdentity:
        """The node owning ``token`` (Unauthorized if none): from :attr:`tokens` when known."""
        known = self.tokens.get(token)
        if known is not None:
            return known
        generation = self.tokens.generation
        with self.db.read() as session:
            node = gateways.authenticate_node(session, token)
        self.tokens.put(token, node, generation=generation)
        return node

    def node_stores(self, node: NodeIdentity) -> list[dict[str, Any]]:
        """The stores the node's gateway uses (definitions only: never a secret)."""
        with self.db.read() as session:
            return stores.stores_of_gateway(session, node.gateway_id)

    def heartbeat(self, node: NodeIdentity, beat: Heartbeat) -> dict[str, Any]:
        """Record the beat and add it to the node's history (compacted once a minute)."""
        now = self.clock()
        with self.db.write() as session:
            answer = gateways.heartbeat(session, node, beat, now=now, offline_after=self.offline_after)
            asked = noderequests.settle(session, node.node_id, limit=beat.limit, draining=beat.draining)
            if asked:  # what the portal asked and the node has not done yet
                answer["requests"] = asked
            history.record(session, node.node_id, history.Figures(
                cpu_percent=beat.cpu_percent, memory_available=beat.memory_available,
                running=beat.running, limit=beat.limit, network_in=beat.network_in,
                network_out=beat.network_out), now=now)
        if now - self._compacted_at >= history.COMPACT_EVERY:
            self._compacted_at = now
            try:
                self.compact_history()
            except SQLAlchemyError:  # the beat is recorded: a compaction can wait a minute
                log.warning("node history not compacted this time", exc_info=True)
        return answer

    def request_node_limit(self, gateway: str, node: str, limit: int) -> dict[str, Any]:
        """Ask the node for a new concurrent-job limit (:mod:`.noderequests`); -> pending."""
        with self.db.write() as session:
            return noderequests.request_limit(session, gateway, node, limit, now=self.clock())

    def request_node_drain(self, gateway: str, node: str, drain: bool) -> dict[str, Any]:
        """Ask the node to drain / take work again (:mod:`.noderequests`); -> pending."""
        with self.db.write() as session:
            return noderequests.request_drain(session, gateway, node, drain, now=self.clock())

    def node_requests(self, gateway: str) -> dict[str, dict[str, Any]]:
        """What is still asked of each node of the gateway, by node name."""
        with self.db.read() as session:
            found = gateways.get_gateway(session, gateway)
            return {n.name: p for n in found.nodes if (p := noderequests.pending(session, n.id))}

    def activity_report(self, run_id: str, activity_run_id: str, *, page: int) -> dict[str, Any]:
        """One page of an activity run's per-file report (:mod:`.reportpage`)."""
        with self.db.read() as session:
            return reportpage.activity_report(session, run_id, activity_run_id, page=page)

    def compact_history(self) -> dict[str, int]:
        """Downsample and prune the node-metrics history (:mod:`.history`), and delete the
        runs that ended more than the run retention ago (:mod:`.runretention`)."""
        with self.db.write() as session:
            done = history.compact(session, now=self.clock(),
                                   retention=self.settings.cloud_history_retention)
        with self.db.write() as session:
            done["runs_pruned"] = runretention.prune_runs(
                session, now=self.clock(), retention=self.settings.cloud_run_retention)
        return done

    def node_history(self, gateway: str, node: str, *, since: float) -> dict[str, Any]:
        """The node's metrics history from ``since`` seconds ago (users)."""
        with self.db.read() as session:
            return history.node_history(session, gateway, node, since=self.clock() - since)

    # -- the dispatcher and workers -------------------------------------------------------
    def claim(self, node: NodeIdentity, *, epoch: int, limit: int,
              recheck: bool = False) -> list[dict[str, Any]]:
        """Claim as the gateway's dispatcher with site epoch ``epoch``; nothing while another
        node's cloud lease runs (:mod:`.leader`). ``recheck``: a waiting long-poll's periodic
        look, made in a read transaction first (no write lock) when nothing is claimable."""
        return self.claim_with_cancels(node, epoch=epoch, limit=limit, recheck=recheck, cancels=False)[0]

    def claim_with_cancels(self, node: NodeIdentity, *, epoch: int, limit: int, recheck: bool = False,
                           cancels: bool = True, again: Collection[str] | None = None,
                           ) -> tuple[list[dict[str, Any]], list[str]]:
        """:meth:`claim`; -> (the claimed runs, and when there are any and ``cancels``, what
        :meth:`cancelled_activity_runs` answers, read in the claim's own transaction: the
        long-poll's answer carries both, without a second transaction before it is sent).
        ``again``: the dispatcher's last claim failed, see :func:`.dispatch.claim`."""
        if recheck and again is None:
            with self.db.read() as session:
                if dispatch.nothing_to_claim(session, node, epoch=epoch, now=self.clock(),
                                             ttl=self.lease_ttl):
                    return [], []
        for tries_left in reversed(range(CLAIM_TRIES)):
            try:
                with self.db.write() as session:
                    now = self.clock()
                    claimed = dispatch.claim(session, node, epoch=epoch, limit=limit, now=now,
                                             ttl=self.lease_ttl, again=again)
                    cancelled = (cancel.cancelled_since(session, node, since=now - cancel.CANCEL_WINDOW)
                                 if claimed and cancels else [])
                    return claimed, cancelled
            except leader.LeaseHeld:
                return [], []
            except leader.LeaseBusy:
                # Two claims met taking a free lease (PostgreSQL): the other has committed or
                # will in a moment; this one is tried again before the caller is told to.
                if not tries_left:
                    raise
                time.sleep(random.uniform(CLAIM_RETRY_PAUSE / 8, CLAIM_RETRY_PAUSE))
        raise AssertionError("unreachable")

    def release_dispatcher(self, node: NodeIdentity, *, epoch: int) -> bool:
        """Free the cloud lease ``node`` holds with site epoch ``epoch`` (its long-poll closed)."""
        with self.db.write() as session:
            return leader.release(session, node, epoch)

    def cancelled_activity_runs(self, node: NodeIdentity, *, since: float | None = None) -> list[str]:
        """Activity runs of the node's gateway cancelled after ``since`` (default: within
        :data:`.cancel.CANCEL_WINDOW`)."""
        with self.db.read() as session:
            start = since if since is not None else self.clock() - cancel.CANCEL_WINDOW
            return cancel.cancelled_since(session, node, since=start)

    def nodes_gone(self, node: NodeIdentity, *, epoch: int, nodes: list[str]) -> list[str]:
        """The dispatcher (epoch fenced) says these nodes' processes are gone: Offline at once."""
        with self.db.write() as session:
            leader.dispatcher_epoch(session, node, epoch, now=self.clock(), ttl=self.lease_ttl)
            return gateways.nodes_gone(session, node, nodes, now=self.clock())

    def plan_shards(self, node: NodeIdentity, activity_run_id: str, *, epoch: int,
                    shards: list[PlannedShard]) -> dict[str, Any]:
        with self.db.write() as session:
            return dispatch.plan_shards(session, node, activity_run_id, epoch=epoch, shards=shards,
                                        now=self.clock(), ttl=self.lease_ttl)

    def fail_activity_run(self, node: NodeIdentity, activity_run_id: str, *, epoch: int,
                          error: str) -> dict[str, Any]:
        with self.db.write() as session:
            return dispatch.fail_activity_run(session, node, activity_run_id, epoch=epoch, error=error,
                                              now=self.clock(), ttl=self.lease_ttl)

    def report_shard(self, node: NodeIdentity, shard_id: str, report: ShardReport) -> dict[str, Any]:
        with self.db.write() as session:
            return dispatch.report_shard(session, node, shard_id, report, now=self.clock(),
                                         ttl=self.lease_ttl)

    def report_batch(self, node: NodeIdentity, items: list[ReportItem]) -> dict[str, Any]:
        """Apply a node's batch of reports and file results in one transaction (:mod:`.batches`)."""
        now = self.clock()
        try:  # the common case: every item taken, a handful of Core statements for the batch
            with self.db.write() as session:
                return reportcore.apply_core(session, node, items, now=now, ttl=self.lease_ttl)
        except batchsets.Irregular as exc:  # rolled back: item by item, each in its savepoint
            log.debug("report batch of %s@%s item by item: %s", node.node, node.gateway, exc)
        with self.db.write() as session:
            return batches.apply_batch(session, node, items, now=now, ttl=self.lease_ttl)

    # -- portal sessions ------------------------------------------------------------------
    def open_portal_session(self) -> str:
        with self.db.write() as session:
            return sessions.open_session(session, now=self.clock())

    def portal_session_open(self, session_id: str) -> bool:
        with self.db.read() as session:
            return sessions.is_open(session, session_id, now=self.clock())

    def close_portal_session(self, session_id: str) -> None:
        with self.db.write() as session:
            sessions.close_session(session, session_id)

    # -- credentials (users: names and versions; nodes: ciphertext only) -------------------
    def credential_key(self, gateway: str) -> dict[str, Any]:
        with self.db.read() as session:
            return credentials.credential_key(session, gateway)

    def set_credential(self, gateway: str, store: str, *, sealed: str, sealed_to: str) -> dict[str, Any]:
        with self.db.write() as session:
            return credentials.set_credential(session, gateway, store, sealed=sealed, sealed_to=sealed_to,
                                              now=self.clock())

    def list_credentials(self, gateway: str) -> dict[str, Any]:
        with self.db.read() as session:
            return credentials.list_credentials(session, gateway)

    def delete_credential(self, gateway: str, store: str) -> None:
        with self.db.write() as session:
            credentials.delete_credential(session, gateway, store)

    def request_credential_sync(self, gateway: str) -> dict[str, Any]:
        with self.db.write() as session:
            return credentials.request_sync(session, gateway)

    def node_credential_versions(self, node: NodeIdentity) -> dict[str, Any]:
        with self.db.read() as session:
            return credentials.versions_for_node(session, node)

    def credential_sync_view(self, node: NodeIdentity) -> dict[str, Any]:
        with self.db.read() as session:
            return credentials.sync_view(session, node)

    def offer_gateway_key(self, node: NodeIdentity, public_key: str) -> dict[str, Any]:
        with self.db.write() as session:
            return credentials.offer_gateway_key(session, node, public_key)

    # -- per-file reports -----------------------------------------------------------------
    def record_file_results(self, node: NodeIdentity, shard_id: str, body: FileResults) -> dict[str, Any]:
        with self.db.write() as session:
            return files.record_file_results(session, node, shard_id, body, now=self.clock())

    def run_report(self, run_id: str, *, status: str | None = None) -> Iterator[str]:
        """The run's per-file report as JSON Lines; NotFound (at once) for an unknown run."""
        with self.db.read() as session:
            files.check_run(session, run_id)
        return self._report_lines(run_id, status)

    def _report_lines(self, run_id: str, status: str | None) -> Iterator[str]:
        with self.db.read() as session:
            yield from files.report_lines(session, run_id, status=status)

    def file_counts(self, activity_run_ids: list[str]) -> dict[str, dict[str, dict[str, int]]]:
        with self.db.read() as session:
            return files.file_counts(session, activity_run_ids)
