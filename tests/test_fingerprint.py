"""The configuration fingerprint, the Inactive rules and the reason labels (pure rules)."""

from __future__ import annotations

from dmg.fingerprint import NO_PROXY, config_hash, config_parts, differences, majority, redact_url
from dmg.inactivity import config_reasons, cut_off, with_inactive
from dmg.reasons import KINDS, reason_kind
from dmg.status import INACTIVE, LIMITED, OFFLINE, ONLINE, NodeStatus
from settings import Settings


def test_a_proxy_url_is_shown_without_its_credentials() -> None:
    shown = redact_url("http://alice:hunter2@proxy.example:3128")
    assert "hunter2" not in shown and "alice" not in shown
    assert shown.startswith("http://***@proxy.example:3128#")
    # Two URLs that differ only in their password still show different.
    assert redact_url("http://alice:other@proxy.example:3128") != shown
    assert redact_url("http://proxy.example:3128") == "http://proxy.example:3128"
    assert redact_url("") == NO_PROXY


def test_the_parts_name_what_must_match_and_the_hash_follows_them() -> None:
    parts = config_parts(Settings(), encryption="tls", proxy="http://u:p@h:1")
    assert {"encryption", "proxy", "heartbeat_interval", "offline_after", "lease_ttl",
            "shard_max_files"} <= set(parts)
    assert "redis_url" not in parts and "node_concurrency" not in parts
    assert "p@" not in parts["proxy"]
    assert config_hash(parts) == config_hash(dict(reversed(list(parts.items()))))
    other = config_parts(Settings(lease_ttl=99.0), encryption="tls", proxy="http://u:p@h:1")
    assert config_hash(other) != config_hash(parts)


def test_differences_name_each_part_against_the_majority() -> None:
    a = {"lease_ttl": "10.0", "offline_after": "30.0"}
    odd = {"lease_ttl": "2.0", "offline_after": "30.0"}
    chosen = majority([a, dict(a), odd])
    assert chosen == a
    assert differences(odd, chosen) == ["lease ttl differs: 2.0 vs majority 10.0"]
    assert differences({"new_part": "x"}, chosen) == []  # a part one side lacks is not compared


def test_the_proxy_is_compared_with_the_gateways_not_the_majoritys() -> None:
    parts = {"proxy": NO_PROXY, "lease_ttl": "10.0"}
    # Every node is still without the proxy the gateway just set: each is Inactive until it applies it.
    [reason] = config_reasons(parts, majority([parts, parts]), gateway_proxy="http://p:1")
    assert reason.startswith("proxy differs: none vs the gateway's http://p:1")
    applied = {"proxy": "http://p:1", "lease_ttl": "10.0"}
    assert config_reasons(applied, majority([parts, parts]), gateway_proxy="http://p:1") == []
    assert config_reasons({}, majority([parts]), gateway_proxy="http://p:1") == []  # an older node


def test_a_node_that_sees_none_of_the_others_is_cut_off() -> None:
    # a and b share a broker; c talks to another Redis.
    assert set(cut_off({"a": ["b"], "b": ["a"], "c": []})) == {"c"}
    assert cut_off({"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}) == {}
    # Unknown (broker unreachable: Limited for that) or alone: never cut off.
    assert cut_off({"a": ["b"], "b": ["a"], "c": None}) == {}
    assert cut_off({"a": []}) == {}
    # Two apart: the one holding the dispatcher lease is the gateway.
    assert set(cut_off({"a": [], "b": []}, holder="b")) == {"a"}
    # A node that sees a member of the main group is not cut off, even if not seen back yet.
    assert cut_off({"a": ["b"], "b": ["a"], "c": ["a"]}) == {}
    why = cut_off({"a": ["b"], "b": ["a"], "c": []})["c"]
    assert "cannot reach the other nodes through the broker" in why


def test_inactive_ranks_below_offline_and_upgrading_only() -> None:
    assert with_inactive(NodeStatus(ONLINE), ["x differs"]) == NodeStatus(INACTIVE, ("x differs",))
    assert with_inactive(NodeStatus(LIMITED, ("broker",)), ["x"]).status == INACTIVE
    assert with_inactive(NodeStatus(OFFLINE, ("stopped",)), ["x"]) == NodeStatus(OFFLINE, ("stopped",))
    assert with_inactive(NodeStatus(INACTIVE, ("enc",)), ["x"]).reasons == ("enc", "x")
    assert with_inactive(NodeStatus(ONLINE), []) == NodeStatus(ONLINE)


def test_every_reason_has_a_label_from_a_fixed_set() -> None:
    assert reason_kind("proxy differs: none vs the gateway's http://p:1") == "proxy_differs"
    assert reason_kind("lease ttl differs: 2.0 vs majority 10.0") == "config_differs"
    assert reason_kind("no heartbeat for 40 s (threshold 30 s)") == "no_heartbeat"
    assert reason_kind("store 'lake': unreachable") == "store_unreachable"
    assert reason_kind("something new") == "other"
    assert len(set(KINDS)) == len(KINDS)


def test_a_tie_has_no_majority_unless_the_lease_holder_is_in_it() -> None:
    """In a two-node gateway one node's heartbeat must not make the other Inactive."""
    honest = {"lease_ttl": "10.0", "heartbeat_interval": "2.0"}
    odd = {"lease_ttl": "999.0", "heartbeat_interval": "2.0"}
    assert majority([odd, honest]) == {"heartbeat_interval": "2.0"}  # lease_ttl: a tie, no majority
    assert config_reasons(honest, majority([odd, honest]), gateway_proxy="") == []
    assert majority([odd, honest], prefer=honest)["lease_ttl"] == "10.0"
    assert majority([odd, honest, honest], prefer=odd)["lease_ttl"] == "10.0"  # a real majority wins
