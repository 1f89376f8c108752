"""Gateways, keys and node registration rules."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import BadInput, Conflict, NotFound, Unauthorized
from tests.cloud.conftest import MAX_NODES, Cloud, unique


def _db_bytes(cloud: Cloud) -> bytes:
    path = Path(cloud.db_url.removeprefix("sqlite:///"))
    blob = b""
    for candidate in (path, path.with_name(path.name + "-wal")):
        if candidate.exists():
            blob += candidate.read_bytes()
    return blob


def test_create_gateway_returns_two_keys_and_needs_registration(user: CloudClient) -> None:
    name = unique("gw")
    created = user.create_gateway(name)
    assert created["name"] == name
    assert created["status"] == "Needs Registration"
    assert created["key1"] and created["key2"] and created["key1"] != created["key2"]
    assert user.gateway_keys(name) == {"key1": created["key1"], "key2": created["key2"]}
    assert name in [g["name"] for g in user.list_gateways()]
    shown = user.gateway(name)
    assert shown["nodes"] == [] and shown["version"] is None


def test_gateway_names_are_unique_and_checked(user: CloudClient) -> None:
    name = unique("gw")
    user.create_gateway(name)
    with pytest.raises(Conflict):
        user.create_gateway(name)
    with pytest.raises(BadInput) as bad:
        user.create_gateway("has space")
    assert "name" in bad.value.message
    with pytest.raises(NotFound):
        user.gateway(unique("absent"))


def test_keys_and_tokens_are_never_stored_in_plaintext(cloud: Cloud, user: CloudClient) -> None:
    created = user.create_gateway(unique("gw"))
    token = user.register_node(key=created["key2"], name="n1", version="1.0.0")["token"]
    stored = _db_bytes(cloud)
    for secret in (created["key1"], created["key2"], token):
        assert secret.encode() not in stored
    with sqlite3.connect(cloud.db_url.removeprefix("sqlite:///")) as db:
        row = db.execute("SELECT key1_encrypted, key1_hash FROM gateways WHERE name = ?",
                         (created["name"],)).fetchone()
    assert created["key1"] not in row[0] and len(row[1]) == 64


def test_register_with_either_key(user: CloudClient) -> None:
    created = user.create_gateway(unique("gw"))
    first = user.register_node(key=created["key1"], name="a", version="1.0.0")
    second = user.register_node(key=created["key2"], name="b", version="1.0.0")
    assert first["gateway"] == second["gateway"] == created["name"]
    assert first["node"] == "a" and first["token"] != second["token"]
    assert [n["name"] for n in user.list_nodes(created["name"])] == ["a", "b"]


def test_wrong_key_is_refused(user: CloudClient) -> None:
    with pytest.raises(Unauthorized) as refused:
        user.register_node(key="dmgk_not-a-key", name="n1", version="1.0.0")
    assert "key" in refused.value.message


def test_regenerating_a_key_revokes_it_and_keeps_nodes(cloud: Cloud, user: CloudClient) -> None:
    created = user.create_gateway(unique("gw"))
    token = user.register_node(key=created["key1"], name="n1", version="1.0.0")["token"]
    keys = user.regenerate_key(created["name"], "key1")
    assert keys["key1"] != created["key1"] and keys["key2"] == created["key2"]
    with pytest.raises(Unauthorized) as refused:
        user.register_node(key=created["key1"], name="n2", version="1.0.0")
    assert "regenerated" in refused.value.message
    assert user.register_node(key=keys["key1"], name="n2", version="1.0.0")["node"] == "n2"
    with cloud.node(token) as node:
        assert node.heartbeat({"role": "worker"})["status"] == "Online"
    assert [n["name"] for n in user.list_nodes(created["name"])] == ["n1", "n2"]
    with pytest.raises(BadInput):
        user.regenerate_key(created["name"], "key3")


def test_node_names_are_unique_in_a_gateway(user: CloudClient) -> None:
    created = user.create_gateway(unique("gw"))
    user.register_node(key=created["key1"], name="n1", version="1.0.0")
    with pytest.raises(Conflict) as taken:
        user.register_node(key=created["key2"], name="n1", version="1.0.0")
    assert "taken" in taken.value.message
    other = user.create_gateway(unique("gw"))
    assert user.register_node(key=other["key1"], name="n1", version="1.0.0")["gateway"] == other["name"]


def test_a_lower_version_cannot_register(user: CloudClient) -> None:
    created = user.create_gateway(unique("gw"))
    user.register_node(key=created["key1"], name="a", version="1.2.0")
    user.register_node(key=created["key1"], name="b", version="1.2.0")
    with pytest.raises(BadInput) as refused:
        user.register_node(key=created["key1"], name="c", version="1.1.9")
    assert "older than" in refused.value.message and "1.2.0" in refused.value.message
    assert "1.1.9" in refused.value.message and "install dmg 1.2.0" in refused.value.hint
    assert user.register_node(key=created["key1"], name="c", version="1.3.0")["node"] == "c"
    assert user.gateway(created["name"])["version"] == "1.2.0"
    assert [n["name"] for n in user.list_nodes(created["name"])] == ["a", "b", "c"]


def test_node_cap_and_nothing_half_registered(user: CloudClient) -> None:
    created = user.create_gateway(unique("gw"))
    for i in range(MAX_NODES):
        user.register_node(key=created["key1"], name=f"n{i}", version="1.0.0")
    with pytest.raises(Conflict) as full:
        user.register_node(key=created["key1"], name="extra", version="1.0.0")
    assert "most allowed" in full.value.message
    with pytest.raises(BadInput):
        user.register_node(key=created["key1"], name="bad name!", version="1.0.0")
    with pytest.raises(BadInput):
        user.register_node(key=created["key1"], name="n9", version="one")
    assert [n["name"] for n in user.list_nodes(created["name"])] == [f"n{i}" for i in range(MAX_NODES)]


def test_removing_a_node_revokes_its_token(cloud: Cloud, user: CloudClient) -> None:
    created = user.create_gateway(unique("gw"))
    token = user.register_node(key=created["key1"], name="n1", version="1.0.0")["token"]
    with cloud.node(token) as node:
        node.heartbeat({"role": "worker"})
        user.remove_node(created["name"], "n1")
        with pytest.raises(Unauthorized):
            node.heartbeat({"role": "worker"})
        with pytest.raises(Unauthorized):
            node.claim_activity_runs(epoch=1, wait=0)
    assert user.list_nodes(created["name"]) == []
    assert user.gateway(created["name"])["status"] == "Needs Registration"
    with pytest.raises(NotFound):
        user.remove_node(created["name"], "n1")
    again = user.register_node(key=created["key1"], name="n1", version="1.0.0")
    assert again["token"] != token


def test_removing_every_node_allows_a_downgrade(user: CloudClient) -> None:
    created = user.create_gateway(unique("gw"))
    user.register_node(key=created["key1"], name="n1", version="2.0.0")
    user.remove_node(created["name"], "n1")
    assert user.register_node(key=created["key1"], name="n1", version="1.0.0")["node"] == "n1"
