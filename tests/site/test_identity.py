"""The identity stamp of a gateway's Redis namespace (dmg.site.identity), on a real Redis.

Given a namespace stamped by gateway ``site`` of one cloud, a node of another cloud's
gateway ``site`` is refused with one line naming the owner, writes no heartbeat and
takes no lease; the owner's nodes carry on; a node registered before gateway ids
neither stamps nor checks.
"""

from __future__ import annotations

import pytest
import redis as redis_lib

from dispatcher.lease import Lease
from dmg.site.identity import ForeignRedis, SiteIdentity
from dmg.site.state import SiteState

OWNER = SiteIdentity("site", "1-aaaaaaaaaaaa", "http://cloud-a:8050")
STRANGER = SiteIdentity("site", "1-bbbbbbbbbbbb", "http://cloud-b:8050")
LEGACY = SiteIdentity("site", "", "http://cloud-b:8050")


def state_of(client: redis_lib.Redis, identity: SiteIdentity) -> SiteState:
    return SiteState(client, "site", identity=identity, where="redis://127.0.0.1:1/0")


def lease_of(state: SiteState, holder: str) -> Lease:
    token = state.identity.token if state.identity else ""
    return Lease(state.redis, key=state.keys.lease, epoch_key=state.keys.epoch, holder=holder, ttl=5,
                 identity_key=state.keys.identity, identity_token=token)


def test_the_first_node_stamps_and_its_gateway_passes(redis_client: redis_lib.Redis) -> None:
    owner = state_of(redis_client, OWNER)
    owner.claim_identity()
    owner.claim_identity()  # again: the same gateway
    owner.publish_heartbeat("node1", {"node": "node1"}, ttl=5)

    assert redis_client.hget("dmg:site:identity", "token") == b"1-aaaaaaaaaaaa"
    assert set(owner.heartbeats()) == {"node1"}
    assert lease_of(owner, "node1").acquire()


def test_another_gateway_of_the_same_name_is_refused_and_writes_nothing(
        redis_client: redis_lib.Redis) -> None:
    state_of(redis_client, OWNER).claim_identity()
    stranger = state_of(redis_client, STRANGER)

    with pytest.raises(ForeignRedis) as refused:
        stranger.claim_identity()
    with pytest.raises(ForeignRedis):
        stranger.publish_heartbeat("node3", {"node": "node3"}, ttl=5)
    lease = lease_of(stranger, "node3")

    assert str(refused.value) == (
        "this Redis (redis://127.0.0.1:1/0) belongs to gateway 'site' (id 1-aaaaaaaaaaaa, cloud "
        "http://cloud-a:8050); this node is of gateway 'site' (id 1-bbbbbbbbbbbb, cloud http://cloud-b:8050) "
        "(give the node its own Redis database with DMG_REDIS_URL, or give the gateways different names to "
        "share one Redis; if that gateway no longer exists, delete the key dmg:site:identity)")
    assert not lease.acquire() and lease.foreign
    assert redis_client.keys("dmg:site:hb:*") == [] and not redis_client.exists("dmg:site:lease")
    assert redis_client.smembers("dmg:site:nodes") == set()


def test_gateways_of_different_names_each_have_their_own_stamp(redis_client: redis_lib.Redis) -> None:
    state_of(redis_client, OWNER).claim_identity()
    other = SiteState(redis_client, "other", identity=SiteIdentity("other", "2-cccccccccccc", "http://cloud-a:8050"))

    other.claim_identity()
    other.publish_heartbeat("node1", {"node": "node1"}, ttl=5)

    assert set(other.heartbeats()) == {"node1"}


def test_a_node_registered_before_gateway_ids_neither_stamps_nor_checks(
        redis_client: redis_lib.Redis) -> None:
    legacy = state_of(redis_client, LEGACY)
    legacy.claim_identity()
    legacy.publish_heartbeat("node1", {"node": "node1"}, ttl=5)
    assert not redis_client.exists("dmg:site:identity")

    state_of(redis_client, OWNER).claim_identity()
    legacy.publish_heartbeat("node1", {"node": "node1"}, ttl=5)
    assert lease_of(legacy, "node1").acquire()
