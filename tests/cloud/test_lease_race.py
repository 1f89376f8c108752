"""The dispatcher's lease is only read on the hot path, and still fences (PostgreSQL).

Plans, placements and claims of the lease holder read the gateway's lease row under a
shared lock (``FOR SHARE``) instead of locking it for update, so they do not queue
behind each other; a lease change locks the row for update. A placement batch that
races a lease change must wait for it, and be refused once the change commits: a
plain read of the row would take the old epoch as current and let the stale
dispatcher place work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, text

from dmg.cloud.db import Database
from dmg.cloud.models import Gateway, Node
from dmg.cloud.service import leader
from dmg.cloud.service.gateways import NodeIdentity
from tests.cloud.conftest import Cloud, make_pipeline, make_site
from tests.cloud.test_batch_plans import _placed, _plan
from tests.waiting import wait_for


def _identity(db: Database, gateway: str, node: str) -> NodeIdentity:
    with db.read() as session:
        gateway_id = session.scalar(select(Gateway.id).where(Gateway.name == gateway))
        node_id = session.scalar(select(Node.id).where(Node.gateway_id == gateway_id, Node.name == node))
    assert gateway_id is not None and node_id is not None
    return NodeIdentity(node_id=node_id, node=node, gateway_id=gateway_id, gateway=gateway)


def _lock_waiters(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%FROM gateways%'")) or 0)


def test_a_stale_epoch_batch_racing_a_lease_change_waits_and_is_refused(
        postgres_url: str, start_cloud: Callable[..., Cloud]) -> None:
    # Given a cloud on PostgreSQL, and dispatcher d (site epoch 1) that claimed and planned a run
    cloud = start_cloud(db=postgres_url)
    with cloud.user() as user:
        site = make_site(user, nodes=("d", "w"))
        run_id = user.run_pipeline(make_pipeline(user, site.gateway))["id"]
    with cloud.node(site.tokens["d"]) as d:
        [claimed] = d.claim_activity_runs(epoch=1, wait=0, limit=1)
        assert d.report_batch([_plan(claimed["id"], epoch=1, shards=1)])["results"][0]["ok"] is True
    shard = f"{claimed['id']}-00000"
    db = Database(postgres_url)
    try:
        # When d wins the site lease again (site epoch 2): the change is open, not committed,
        # while a placement batch of its old epoch 1 arrives
        answer: dict[str, Any] = {}
        with db.write() as session:
            new_epoch = leader.dispatcher_epoch(session, _identity(db, site.gateway, "d"), 2,
                                                now=time.time(), ttl=30.0)

            def send() -> None:
                with cloud.node(site.tokens["d"]) as stale:
                    answer.update(stale.report_batch([_placed(shard, "w", epoch=1)]))

            sender = threading.Thread(target=send)
            sender.start()
            # Then the batch waits on the gateway's row while the change is open
            wait_for(lambda: _lock_waiters(db) >= 1, timeout=20, what="the batch waiting on the lease row")
            assert sender.is_alive() and not answer
        sender.join(timeout=30)
        assert not sender.is_alive()

        # And once the change commits, the stale batch is refused and nothing is placed
        [result] = answer["results"]
        assert result["ok"] is False and result.get("not_dispatcher") is True, result
        with cloud.user() as user:
            shards = [s for a in user.run(run_id)["activity_runs"] for s in a["shards"]]
        assert [(s["id"], s["status"]) for s in shards] == [(shard, "planned")]
        with db.read() as session:
            gateway = session.scalar(select(Gateway).where(Gateway.name == site.gateway))
            assert gateway is not None and gateway.max_epoch == new_epoch and gateway.leader_site_epoch == 2

        # And the new epoch places it
        with cloud.node(site.tokens["d"]) as d:
            assert d.report_batch([_placed(shard, "w", epoch=2)])["results"][0]["ok"] is True
    finally:
        db.dispose()
