"""Sealed credentials without a site: typed input, the node vault, a real cloud's routes and
statuses, the ``dmg credentials`` / ``dmg node backup|restore|reset|register`` commands
(real processes against a real cloud process)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.placement import _unreachable_reason
from dmg.cloud.client import CloudClient
from dmg.credentials import cloudcalls, sealing
from dmg.credentials.entry import parse_fields
from dmg.credentials.vault import NodeVault, credential_payload
from dmg.errors import BadInput, PermissionDenied
from dmg.placement import NodeLoad, choose_node
from dmg.registration import load as load_registration
from settings import settings_environ
from tests.cloud.conftest import Cloud, launch

NODE_VERSION = "1.0.0"


# -- typed input ----------------------------------------------------------------------------
def test_fields_are_read_as_json_or_key_value_lines() -> None:
    assert parse_fields('{"password": "p w=1"}') == {"password": "p w=1"}
    assert parse_fields("# s3\naccess_key_id = AKIA1\n\nsecret_access_key=a=b c\n") == {
        "access_key_id": "AKIA1", "secret_access_key": "a=b c"}


@pytest.mark.parametrize("text,message", [
    ("", "no credential fields were given"),
    ('{"password": "x"', "the credential is not valid JSON (line 1, column 17)"),
    ('["x"]', "the credential must be a JSON object of strings"),
    ('{"password": 3}', "the credential's 'password' must be a string"),
    ("password hunter2", "line 1 of the credential is not key=value"),
    ("password=a\npassword=b", "the credential gives 'password' twice (line 2)"),
])
def test_bad_input_is_one_line_without_the_value(text: str, message: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_fields(text)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert "hunter2" not in str(caught.value)


# -- the vault --------------------------------------------------------------------------------
def test_the_vault_keeps_only_what_opens_with_its_key_for_that_store(tmp_path: Path) -> None:
    vault = NodeVault(tmp_path / "n1")
    public = vault.public_key()
    blob = sealing.seal(credential_payload("lake", {"password": "s3cr3t-x"}, version=2), public)
    vault.put_credential("lake", 2, blob)
    assert vault.held() == {"lake": 2} and vault.credential("lake") == {"password": "s3cr3t-x"}
    for path in (tmp_path / "n1" / "node.key", tmp_path / "n1" / "credentials" / "lake.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert b"s3cr3t-x" not in path.read_bytes()
    with pytest.raises(BadInput, match="not a credential of 'other'"):
        vault.put_credential("other", 2, blob)  # a blob moved to another store's slot
    with pytest.raises(BadInput, match="holds v2, not v3"):
        vault.put_credential("lake", 3, blob)
    stranger = sealing.seal(credential_payload("lake", {"password": "x"}, version=4),
                            NodeVault(tmp_path / "n2").public_key())
    with pytest.raises(PermissionDenied, match="cannot be opened with this node's key"):
        vault.put_credential("lake", 4, stranger)
    assert vault.held() == {"lake": 2}


def test_placement_skips_a_node_lacking_a_credential_and_says_why() -> None:
    stale = NodeLoad("n1", limit=4, stale_credentials=frozenset({"lake"}))
    fresh = NodeLoad("n2", limit=1, running=1)
    assert choose_node([stale, fresh], stores=["lake"], credentials=["lake"], max_queued=0) is None
    assert choose_node([stale], stores=["files"], credentials=[], max_queued=0) is stale
    reason = _unreachable_reason([stale, fresh], ["lake"], 0, ["lake"])
    assert reason.startswith("the nodes with room lack the current version of credential(s) lake")


# -- against a real cloud -------------------------------------------------------------------
@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    server = launch(tmp_path_factory.mktemp("credcloud"))
    try:
        yield server
    finally:
        server.stop()


def dmg(cloud: Cloud, data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_environ(cloud.settings.replace(data_dir=data_dir)),
           "DMG_CLOUD_URL": cloud.url, "DMG_API_TOKEN": cloud.process.api_token}
    return subprocess.run([sys.executable, "-m", "dmg.cli", *args], input=stdin, text=True,
                          capture_output=True, env=env, timeout=60)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def new_gateway(cloud: Cloud) -> tuple[str, str]:
    name = f"gw-{uuid.uuid4().hex[:6]}"
    with cloud.user() as user:
        return name, str(user.create_gateway(name)["key1"])


def register(cloud: Cloud, data_dir: Path, key: str, name: str) -> subprocess.CompletedProcess[str]:
    return dmg(cloud, data_dir, "node", "register", "--cloud", cloud.url, "--key", key, "--name", name)


def test_set_refuses_unknown_stores_and_missing_fields_then_seals(cloud: Cloud, tmp_path: Path) -> None:
    gateway, key = new_gateway(cloud)
    assert register(cloud, tmp_path, key, "n1").returncode == 0
    token = load_registration(tmp_path, "n1").token
    gateway_key = sealing.new_private_key()
    with CloudClient(cloud.url, token=token) as node:
        cloudcalls.offer_gateway_key(node, sealing.public_text(gateway_key))
    store = f"wh-{uuid.uuid4().hex[:6]}"
    with cloud.user() as user:
        user.add_store({"name": store, "type": "sql", "location": "postgresql://app@db.example/sales"})

    args = ("credentials", "set", "--gateway", gateway)
    unknown_store = one_line_error(dmg(cloud, tmp_path, *args, "nope", stdin="password=x"))
    assert "store 'nope' does not exist" in unknown_store
    missing = one_line_error(dmg(cloud, tmp_path, *args, store, stdin="username=app\n"))
    assert f"the credential of store {store!r} lacks password" in missing
    unknown = one_line_error(dmg(cloud, tmp_path, *args, store, stdin='{"pasword": "hunter2"}'))
    assert "unknown key 'pasword'" in unknown and "hunter2" not in unknown

    done = dmg(cloud, tmp_path, *args, store, stdin='{"password": "hunter2-Qx9"}')
    assert done.returncode == 0 and "version 1" in done.stdout, done.stderr
    with CloudClient(cloud.url, token=token) as node:
        view = cloudcalls.sync_view(node)
    (cred,) = view["credentials"]
    assert "hunter2-Qx9" not in json.dumps(view)
    opened = sealing.unseal(cred["sealed"], gateway_key, what="it")
    assert json.loads(opened)["fields"] == {"password": "hunter2-Qx9"}

    # A node that reports an older version is Limited, with the reason in words.
    with CloudClient(cloud.url, token=token) as node:
        assert dmg(cloud, tmp_path, *args, store, stdin="password=second-Ab3").returncode == 0
        beat = node.heartbeat({"role": "worker", "limit": 2, "version": NODE_VERSION,
                               "credentials": {store: 1}})
    assert beat["status"] == "Limited"
    assert f"out of sync: has v1 of {store!r}, gateway has v2" in beat["reasons"]
    listed = json.loads(dmg(cloud, tmp_path, "credentials", "list", "--gateway", gateway, "--json").stdout)
    assert [(c["store"], c["version"], c["nodes"]) for c in listed["credentials"]] == [(store, 2, {"n1": 1})]
    assert dmg(cloud, tmp_path, "credentials", "delete", store, "--gateway", gateway).returncode == 0
    with CloudClient(cloud.url, token=token) as node:
        assert cloudcalls.node_versions(node)["credentials"] == {}


def test_a_data_dir_serves_one_gateway_until_reset(cloud: Cloud, tmp_path: Path) -> None:
    gateway_a, key_a = new_gateway(cloud)
    gateway_b, key_b = new_gateway(cloud)
    assert register(cloud, tmp_path, key_a, "n1").returncode == 0
    refused = one_line_error(register(cloud, tmp_path, key_b, "n2"))
    assert f"is registered to gateway {gateway_a!r} (node n1)" in refused and "dmg node reset" in refused
    with cloud.user() as user:
        assert user.list_nodes(gateway_b) == []  # nothing was registered

    assert dmg(cloud, tmp_path, "node", "reset").returncode == 1  # asks; no answer: aborted
    assert (tmp_path / "nodes" / "n1" / "node.json").exists()
    done = dmg(cloud, tmp_path, "node", "reset", "--yes")
    assert done.returncode == 0 and f"forgot node(s) n1 of gateway {gateway_a}" in done.stdout
    assert not (tmp_path / "nodes" / "n1" / "node.key").exists()
    assert register(cloud, tmp_path, key_b, "n2").returncode == 0
    assert load_registration(tmp_path, "n2").gateway == gateway_b


def test_backup_and_restore_onto_a_fresh_data_dir(cloud: Cloud, tmp_path: Path) -> None:
    _gateway, key = new_gateway(cloud)
    old, new = tmp_path / "old", tmp_path / "new"
    assert register(cloud, old, key, "n1").returncode == 0
    vault = NodeVault(old / "nodes" / "n1")
    payload = credential_payload("lake", {"password": "pw-Zr4"}, version=1)
    vault.put_credential("lake", 1, sealing.seal(payload, vault.public_key()))
    backup = tmp_path / "n1.backup"
    done = dmg(cloud, old, "node", "backup", str(backup), stdin="correct horse\n")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and b"pw-Zr4" not in backup.read_bytes()

    wrong = one_line_error(dmg(cloud, new, "node", "restore", str(backup), stdin="wrong\n"))
    assert "wrong password" in wrong
    assert not (new / "nodes").exists()
    done = dmg(cloud, new, "node", "restore", str(backup), stdin="correct horse\n")
    assert done.returncode == 0, done.stderr
    restored = NodeVault(new / "nodes" / "n1")
    assert restored.public_key() == vault.public_key()
    assert restored.credential("lake") == {"password": "pw-Zr4"}
    assert load_registration(new, "n1") == load_registration(old, "n1")
    assert "already registered" in one_line_error(
        dmg(cloud, new, "node", "restore", str(backup), stdin="correct horse\n"))


def test_import_moves_a_credentials_file_in(cloud: Cloud, tmp_path: Path) -> None:
    gateway, key = new_gateway(cloud)
    assert register(cloud, tmp_path, key, "n1").returncode == 0
    with CloudClient(cloud.url, token=load_registration(tmp_path, "n1").token) as node:
        cloudcalls.offer_gateway_key(node, sealing.public_text(sealing.new_private_key()))
    store = f"lake-{uuid.uuid4().hex[:6]}"
    with cloud.user() as user:
        user.add_store({"name": store, "type": "s3", "location": "s3://bucket/prefix"})
    file = tmp_path / "credentials.toml"
    file.write_text(f'[stores.{store}]\naccess_key_id = "AKIA1"\nsecret_access_key = "imported-Xy7"\n')
    file.chmod(0o600)
    done = dmg(cloud, tmp_path, "credentials", "import", str(file), "--gateway", gateway)
    assert done.returncode == 0, done.stderr
    assert "imported 1 credential(s)" in done.stdout and f"rm {file}" in done.stdout
    listed = json.loads(dmg(cloud, tmp_path, "credentials", "list", "--gateway", gateway, "--json").stdout)
    assert [(c["store"], c["version"]) for c in listed["credentials"]] == [(store, 1)]

    file.write_text('[stores.nobody-uses-it]\npassword = "x"\n')
    refused = one_line_error(dmg(cloud, tmp_path, "credentials", "import", str(file), "--gateway", gateway))
    assert "no store uses the credential [stores.nobody-uses-it]" in refused
