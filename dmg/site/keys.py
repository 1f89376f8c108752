"""Every Redis key of a gateway's site: the only module that spells them.

All keys live under ``dmg:<gateway>:`` (:attr:`SiteKeys.prefix`); Lua scripts that
derive a key from the prefix (:mod:`dmg.site.scripts`) follow the same table.

==========================  ===================================================
``identity``                hash ``token``, ``json``: the gateway this namespace belongs
                            to, stamped at first start (:mod:`dmg.site.identity`)
``hb:<node>``               JSON heartbeat of a node agent, expires on its own
``load:<node>``             JSON ``{running, limit, pids, ts}`` from the worker
``nodes``                   set of node names that ever sent a heartbeat
``limit:<node>``            the node's concurrent-job limit set at runtime
``queued:<node>``           set of shard ids placed on the node, not started
``carried:<node>``          set of the shard ids in ``queued:<node>`` that ride in a packed
                            message behind its first shard (:mod:`dispatcher.packing`): the
                            node's queued messages are ``queued`` less these
``running:<node>``          set of shard ids the node is running
``started:<node>``          set of staging ids (``<shard>.<attempt>``) the node began, not ended
``shard:<id>``              hash: ``spec`` (JSON), ``attempt``, ``node``, ``state``, ``epoch``,
                            ``deliveries``, ``runner``, ``duplicates``, ``unsent``,
                            ``ended_reason``, ``ended_at`` (:mod:`dmg.site.shards`)
``drain``                   hash: node -> ``drain`` / ``removed``: place nothing new there
``planning``                set of activity runs whose shards may not be pending yet
``pending``                 list of shard ids planned but not placed yet
``wake``                    pinged when a slot frees or work arrives (wakes placement)
``lease`` / ``epoch``       the dispatcher lease token and fencing counter
``plan:<activity run>``     JSON list of the activity run's shards (dispatcher.planner)
``outbox:<node>``           list of shard reports waiting for the cloud (workers.run.outbox)
``outbox-flush:<node>``     one entry at most: a shard that streamed its file results ended;
                            the node's sender sends at once instead of letting reports gather
``outbox-held:<node>``      hash: shard id -> JSON ``{due, tries, entries}``, reports the cloud
                            could not take yet, sent again from ``due`` on (workers.run.outbox)
``placements``              list of ``placed`` reports waiting for the cloud, written before
                            the shard's message is sent (dispatcher.reports)
``creds:<node>``            hash: store -> JSON ``{version, sealed}``, the store's credential
                            re-sealed to the node's key by the dispatcher (dmg.site.credentials)
``gwkey:<node>``            JSON ``{public_key, sealed}``: the gateway key sealed to the node's key
``bw:<activity run>``       bandwidth limit in bytes/s set while it runs (0: none)
``bwtat:<activity run>``    its shared pacing schedule (dmg.transfer.sitebandwidth)
``cancelled:<run>``         set when a user cancelled activity run ``<run>``: no shard of
                            it starts or goes on
``split:<object>``          a split object's record (:mod:`dmg.site.splits`)
``parts:<object>``          hash: part -> the shard attempt that wrote it
``commit:<object>``         the split object's commit marker (owner token, ``done``, ``aborted``)
``celery:*``                every key and channel of Celery and kombu: queues
                            ``node.<name>``, bindings, ``unacked*``, broadcast and
                            event channels, ``celery-task-meta-*`` results
                            (``global_keyprefix``, :func:`settings.celery.broker_key_prefix`)
==========================  ===================================================
"""

from __future__ import annotations


def site_prefix(gateway: str) -> str:
    """The prefix of every key of ``gateway``'s site."""
    return f"dmg:{gateway}:"


class SiteKeys:
    """The key names of one gateway's site (see the module docstring)."""

    def __init__(self, gateway: str) -> None:
        self.prefix = site_prefix(gateway)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- one per site -----------------------------------------------------------------
    @property
    def identity(self) -> str:
        return self._key("identity")

    @property
    def nodes(self) -> str:
        return self._key("nodes")

    @property
    def drain(self) -> str:
        return self._key("drain")

    @property
    def planning(self) -> str:
        return self._key("planning")

    @property
    def pending(self) -> str:
        return self._key("pending")

    @property
    def wake(self) -> str:
        return self._key("wake")

    @property
    def lease(self) -> str:
        return self._key("lease")

    @property
    def epoch(self) -> str:
        return self._key("epoch")

    @property
    def placements(self) -> str:
        return self._key("placements")

    # -- one per node -----------------------------------------------------------------
    def heartbeat(self, node: str) -> str:
        return self._key("hb", node)

    def load(self, node: str) -> str:
        return self._key("load", node)

    def limit(self, node: str) -> str:
        return self._key("limit", node)

    def queued(self, node: str) -> str:
        return self._key("queued", node)

    def running(self, node: str) -> str:
        return self._key("running", node)

    def carried(self, node: str) -> str:
        return self._key("carried", node)

    def moved(self, node: str) -> str:
        """Hash ``{in, out}``: bytes the node's copies read and wrote (dmg.site.state)."""
        return self._key("moved", node)

    def started(self, node: str) -> str:
        return self._key("started", node)

    def outbox(self, node: str) -> str:
        return self._key("outbox", node)

    def outbox_wake(self, node: str) -> str:
        """List of one entry at most: a report was queued into an empty outbox
        (workers.run.outbox wakes its idle sender with it)."""
        return self._key("outbox-wake", node)

    def outbox_flush(self, node: str) -> str:
        """List of one entry at most: a shard that streamed its file results ended, its final
        report queued (workers.run.outbox: the sender stops letting reports gather)."""
        return self._key("outbox-flush", node)

    def outbox_held(self, node: str) -> str:
        return self._key("outbox-held", node)

    def credential_copies(self, node: str) -> str:
        return self._key("creds", node)

    def gateway_key_copy(self, node: str) -> str:
        return self._key("gwkey", node)

    # -- one per shard, activity run, split object --------------------------------------
    def shard(self, shard_id: str) -> str:
        return self._key("shard", shard_id)

    def plan(self, activity_run_id: str) -> str:
        return self._key("plan", activity_run_id)

    def bandwidth(self, activity_run_id: str) -> str:
        return self._key("bw", activity_run_id)

    def pacing(self, activity_run_id: str) -> str:
        return self._key("bwtat", activity_run_id)

    def cancelled(self, activity_run_id: str) -> str:
        return self._key("cancelled", activity_run_id)

    def split(self, object_id: str) -> str:
        return self._key("split", object_id)

    def parts(self, object_id: str) -> str:
        return self._key("parts", object_id)

    def commit_marker(self, object_id: str) -> str:
        return self._key("commit", object_id)

    # -- Celery's ---------------------------------------------------------------------
    def celery(self, name: str) -> str:
        """A key of Celery/kombu under this site (``name``: e.g. the queue ``node.a``)."""
        return self._key("celery", name)
