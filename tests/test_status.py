"""The status rules (dmg.status): what each node and gateway status means, in pure terms."""

from __future__ import annotations

from dmg.status import (
    INACTIVE,
    LIMITED,
    NEEDS_REGISTRATION,
    NO_NODE_WORKS,
    OFFLINE,
    ONLINE,
    POOL_NOT_RUNNING,
    STOPPED,
    UPGRADING,
    NodeStatus,
    RoleClaim,
    dispatcher_of,
    encryption_mismatch,
    gateway_state,
    gateway_status,
    node_status,
    shown_role,
)

NOW = 1000.0


def _node(**changes: object) -> NodeStatus:
    args: dict[str, object] = {"last_heartbeat": NOW - 1, "now": NOW, "offline_after": 10.0,
                               "version": "1.0.0", "gateway_version": "1.0.0"}
    args.update(changes)
    return node_status(**args)  # type: ignore[arg-type]


def test_a_clean_stop_is_offline_stopped_at_once_even_with_a_fresh_heartbeat() -> None:
    assert _node(stopped=True) == NodeStatus(OFFLINE, (STOPPED,))
    assert _node(stopped=False).status == ONLINE


def test_a_node_whose_worker_pool_is_not_running_is_offline_not_online() -> None:
    assert _node(pool_running=False) == NodeStatus(OFFLINE, (POOL_NOT_RUNNING,))
    assert _node(pool_running=False, problems=["broker unreachable"]).reasons == (
        POOL_NOT_RUNNING, "broker unreachable")
    # A silent node is Offline for its silence first.
    assert "no heartbeat" in _node(pool_running=False, last_heartbeat=NOW - 60).reasons[0]


def test_a_gateway_is_offline_only_when_no_node_can_do_work() -> None:
    limited = NodeStatus(LIMITED, ("cannot reach store(s) lake",))
    gone = NodeStatus(OFFLINE, (STOPPED,))
    assert gateway_state({}).status == NEEDS_REGISTRATION
    assert gateway_state({"a": NodeStatus(ONLINE), "b": NodeStatus(ONLINE)}) == NodeStatus(ONLINE)
    # Every node Limited (an unused store, a short broker outage): it still moves data.
    state = gateway_state({"a": limited, "b": NodeStatus(LIMITED, ("broker unreachable",))})
    assert state.status == LIMITED
    assert state.reasons == ("a: Limited (cannot reach store(s) lake)", "b: Limited (broker unreachable)")
    one_left = gateway_state({"a": NodeStatus(ONLINE), "b": gone})
    assert one_left == NodeStatus(LIMITED, ("b: Offline (stopped)",))
    # No node can work: Offline, and says why for each node.
    draining = NodeStatus(UPGRADING, ("draining for an update",))
    state = gateway_state({"a": gone, "b": draining})
    assert state.status == OFFLINE
    assert state.reasons == (NO_NODE_WORKS, "a: Offline (stopped)", "b: Upgrading (draining for an update)")
    assert gateway_status([LIMITED, LIMITED]) == LIMITED and gateway_status([OFFLINE]) == OFFLINE


def _claim(node: str, role: str, epoch: int, *, beat: float = NOW, status: str = ONLINE) -> RoleClaim:
    return RoleClaim(node=node, role=role, epoch=epoch, last_heartbeat=beat, status=status)


def test_exactly_one_node_shows_dispatcher_the_current_epoch_wins() -> None:
    # A killed dispatcher (epoch 3) still inside the heartbeat threshold, and its successor (4).
    claims = [_claim("a", "dispatcher", 3, beat=NOW - 5), _claim("b", "dispatcher", 4),
              _claim("c", "worker", 0)]
    winner = dispatcher_of(claims)
    assert winner == "b"
    assert [shown_role(c, winner) for c in claims] == ["worker", "dispatcher", "worker"]
    # Once Offline, a dead dispatcher never shows dispatcher, even with the highest epoch.
    dead = [_claim("a", "dispatcher", 9, status=OFFLINE), _claim("b", "worker", 0)]
    assert dispatcher_of(dead) is None
    assert [shown_role(c, None) for c in dead] == ["worker", "worker"]
    # Same epoch (an old node sends none): the latest beat wins; still one.
    tie = [_claim("a", "dispatcher", 0, beat=NOW - 1), _claim("b", "dispatcher", 0)]
    assert dispatcher_of(tie) == "b"


def test_a_node_whose_encryption_mode_is_not_its_gateways_is_inactive_with_the_reason() -> None:
    assert encryption_mismatch("tls", "tls") == encryption_mismatch("none", "none") == ""
    assert encryption_mismatch("", "tls") == ""  # an older node that does not say: not judged
    plain = encryption_mismatch("none", "tls")
    assert plain.startswith("encryption mode differs: the node reaches the site broker in plain text (none), "
                            "the gateway's mode is tls"), plain
    assert _node(encryption_mismatch=plain) == NodeStatus(INACTIVE, (plain,))
    # worse states win: a silent node is Offline whatever its mode
    assert _node(last_heartbeat=NOW - 60, encryption_mismatch=plain).status == OFFLINE
