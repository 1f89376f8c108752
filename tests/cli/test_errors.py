"""Bad input through the real ``dmg`` executable: one line on stderr, non-zero exit,
no traceback, and nothing half-done in the cloud."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.cli.conftest import DmgRunner, assert_one_line_error


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pipeline_body(name: str, gateway: str, source: str, sink: str) -> dict[str, Any]:
    return {"name": name, "gateway": gateway, "activities": [
        {"name": "copy", "source": {"store": source, "path": ""}, "sink": {"store": sink, "path": "out"}}]}


# -- files that are wrong before anything is sent -------------------------------------------
@pytest.mark.parametrize("text, words", [
    ('{"name": "p", ', "is not valid JSON"),
    ("[1, 2]", "must hold one JSON object"),
    ("", "is not valid JSON"),
])
def test_malformed_pipeline_json_is_one_line(offline_dmg: DmgRunner, write_json: Callable[[str, Any], str],
                                             text: str, words: str) -> None:
    path = write_json("pipeline.json", text)
    result = offline_dmg("pipeline", "create", path)
    line = assert_one_line_error(result, contains=words)
    assert "pipeline.json" in line


@pytest.mark.parametrize("body, words", [
    ({"gateway": "g", "activities": []}, "missing 'name'"),
    ({"name": "p", "activities": []}, "missing 'gateway'"),
    ({"name": "p", "gateway": "g", "activities": []}, "non-empty 'activities'"),
    ({"name": "p", "gateway": "g", "activities": [{"name": "a", "sink": {"store": "s"}}]},
     "missing 'source'"),
    ({"name": "p", "gateway": "g", "activities": [{"name": "a", "source": {"path": "x"},
                                                    "sink": {"store": "s"}}]}, "missing 'store'"),
    ({"name": "p", "gateway": "g", "activities": [{"name": "a", "source": {"store": "s"}, "sink": "s"}]},
     "'sink' must be an object"),
])
def test_pipeline_with_a_missing_field_is_one_line(offline_dmg: DmgRunner,
                                                   write_json: Callable[[str, Any], str],
                                                   body: dict[str, Any], words: str) -> None:
    result = offline_dmg("pipeline", "create", write_json("p.json", body))
    assert_one_line_error(result, contains=words)


def test_store_without_location_or_with_unknown_type(offline_dmg: DmgRunner,
                                                     write_json: Callable[[str, Any], str]) -> None:
    missing = offline_dmg("store", "add", write_json("s.json", {"name": "s", "type": "file"}))
    assert_one_line_error(missing, contains="missing location")
    ftp = {"name": "s", "type": "ftp", "location": "/x"}
    unknown = offline_dmg("store", "add", write_json("t.json", ftp))
    assert_one_line_error(unknown, contains="unknown type 'ftp'")


def test_missing_file_is_one_line(offline_dmg: DmgRunner) -> None:
    assert_one_line_error(offline_dmg("store", "add", "nowhere.json"), contains="does not exist")


def test_unusable_setting_is_one_line(offline_dmg: DmgRunner) -> None:
    result = offline_dmg("runs", "list", DMG_HEARTBEAT_INTERVAL="soon")
    assert_one_line_error(result, contains="DMG_HEARTBEAT_INTERVAL")


def test_no_api_token_is_one_line(offline_dmg: DmgRunner) -> None:
    assert_one_line_error(offline_dmg("gateway", "list"), contains="no API token")


def test_unreachable_cloud_is_one_line(offline_dmg: DmgRunner) -> None:
    result = offline_dmg("gateway", "list", DMG_API_TOKEN="t")
    assert_one_line_error(result, contains="cannot reach the cloud")


def test_bad_option_is_a_usage_error_not_a_traceback(offline_dmg: DmgRunner) -> None:
    result = offline_dmg("up", "--nodes", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--nodes" in result.stderr


# -- against a real cloud -----------------------------------------------------------------
def test_gateway_name_already_taken(dmg: DmgRunner) -> None:
    name = unique("gw")
    first = dmg("gateway", "create", name)
    assert first.returncode == 0, first.stderr
    assert "key1: dmgk_" in first.stdout and "key2: dmgk_" in first.stdout
    again = dmg("gateway", "create", name)
    assert_one_line_error(again, contains="already exists")
    assert [g["name"] for g in dmg.json("gateway", "list")].count(name) == 1


def test_wrong_key_does_not_register_or_save(dmg: DmgRunner, tmp_path: Any) -> None:
    result = dmg("node", "register", "--key", "dmgk_not-a-key", "--name", "n1")
    assert_one_line_error(result, contains="key")
    assert not (tmp_path / "dmg-data" / "nodes" / "n1" / "node.json").exists()


def test_register_saves_private_state_and_refuses_twice(dmg: DmgRunner, tmp_path: Any) -> None:
    gateway = unique("gw")
    keys = dmg.json("gateway", "create", gateway)
    ok = dmg("node", "register", "--key", keys["key1"], "--name", "n1")
    assert ok.returncode == 0, ok.stderr
    state = tmp_path / "dmg-data" / "nodes" / "n1" / "node.json"
    assert state.stat().st_mode & 0o777 == 0o600
    assert keys["key1"] not in state.read_text()  # the node keeps its token, not the key
    again = dmg("node", "register", "--key", keys["key1"], "--name", "n1")
    assert_one_line_error(again, contains="already registered")
    nodes = dmg.json("node", "list", "--gateway", gateway)
    assert [n["name"] for n in nodes] == ["n1"]

    removed = dmg("node", "remove", "n1")
    assert removed.returncode == 0, removed.stderr
    assert not state.exists()
    assert dmg.json("node", "list", "--gateway", gateway) == []


def test_register_reads_the_key_from_stdin_keeping_it_off_the_command_line(dmg: DmgRunner) -> None:
    keys = dmg.json("gateway", "create", unique("gw"))
    nothing = dmg("node", "register", "--name", "n1")  # --key - is the default: stdin is empty
    assert_one_line_error(nothing, contains="no gateway key on stdin")
    ok = dmg("node", "register", "--key", "-", "--name", "n1", stdin=keys["key1"] + "\n")
    assert ok.returncode == 0, ok.stderr
    assert "registered to gateway" in ok.stdout and keys["key1"] not in ok.stdout + ok.stderr


def test_regenerated_key_replaces_only_that_key(dmg: DmgRunner) -> None:
    gateway = unique("gw")
    before = dmg.json("gateway", "create", gateway)
    after = dmg.json("gateway", "keys", gateway, "--regenerate", "key2")
    assert after["key1"] == before["key1"] and after["key2"] != before["key2"]
    old = dmg("node", "register", "--key", before["key2"], "--name", "n2")
    assert_one_line_error(old, contains="key")


def test_pipeline_with_unknown_store_creates_nothing(dmg: DmgRunner,
                                                     write_json: Callable[[str, Any], str],
                                                     tmp_path: Any) -> None:
    gateway, source, pipeline = unique("gw"), unique("src"), unique("p")
    assert dmg("gateway", "create", gateway).returncode == 0
    store = write_json("src.json", {"name": source, "type": "file", "location": str(tmp_path)})
    assert dmg("store", "add", store).returncode == 0
    result = dmg("pipeline", "create", write_json("p.json", pipeline_body(pipeline, gateway, source,
                                                                          unique("nostore"))))
    assert_one_line_error(result, contains="does not exist")
    assert pipeline not in [p["name"] for p in dmg.json("pipeline", "list")]


def test_store_name_taken_and_store_secret_refused(dmg: DmgRunner, write_json: Callable[[str, Any], str],
                                                   tmp_path: Any) -> None:
    name = unique("st")
    path = write_json("s.json", {"name": name, "type": "file", "location": str(tmp_path)})
    assert dmg("store", "add", path).returncode == 0
    assert_one_line_error(dmg("store", "add", path), contains="already exists")
    secret = write_json("x.json", {"name": unique("st"), "type": "file", "location": str(tmp_path),
                                   "options": {"password": "hunter2"}})
    line = assert_one_line_error(dmg("store", "add", secret))
    assert "hunter2" not in line


def test_unknown_run_and_pipeline(dmg: DmgRunner) -> None:
    assert_one_line_error(dmg("runs", "show", "no-such-run"), contains="does not exist")
    assert_one_line_error(dmg("pipeline", "run", unique("nope")), contains="does not exist")


def test_run_wait_gives_up_after_timeout(dmg: DmgRunner, write_json: Callable[[str, Any], str],
                                         tmp_path: Any) -> None:
    """Given a gateway without nodes, `--wait --timeout` fails in one line, run left Queued."""
    gateway, source, sink, pipeline = unique("gw"), unique("src"), unique("dst"), unique("p")
    assert dmg("gateway", "create", gateway).returncode == 0
    for name in (source, sink):
        assert dmg("store", "add", write_json(f"{name}.json", {"name": name, "type": "file",
                                                                "location": str(tmp_path)})).returncode == 0
    created = dmg("pipeline", "create", write_json("p.json", pipeline_body(pipeline, gateway, source, sink)))
    assert created.returncode == 0, created.stderr
    waited = dmg("pipeline", "run", pipeline, "--wait", "--timeout", "0.5")
    assert waited.returncode == 1
    assert "Traceback" not in waited.stderr
    assert waited.stderr.strip().splitlines()[-1].startswith("error: run ")
    runs = [r for r in dmg.json("runs", "list") if r["pipeline"] == pipeline]
    assert [r["status"] for r in runs] == ["Queued"]
    shown = dmg.json("runs", "show", runs[0]["id"])
    assert shown["id"] == runs[0]["id"] and shown["activity_runs"][0]["name"] == "copy"


def test_cloud_serve_refuses_a_bad_or_busy_address(offline_dmg: DmgRunner) -> None:
    import socket

    assert_one_line_error(offline_dmg("cloud", "serve", "--bind", "nonsense"), contains="not HOST:PORT")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = offline_dmg("cloud", "serve", "--bind", f"127.0.0.1:{port}")
    assert_one_line_error(result, contains="already in use")


def test_cloud_token_prints_the_token_of_the_cloud_in_the_data_dir(cli_cloud: Any,
                                                                   offline_dmg: DmgRunner) -> None:
    cloud_data_dir = cli_cloud.log_path.parent.parent  # <data dir>/cloud/cloud.log
    shown = offline_dmg("cloud", "token", DMG_DATA_DIR=str(cloud_data_dir))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"{cli_cloud.api_token}\n"
    assert_one_line_error(offline_dmg("cloud", "token"), contains="no API token")


def test_gateway_list_and_show_say_why_a_gateway_is_not_online(dmg: DmgRunner) -> None:
    gateway = unique("gw")
    keys = dmg.json("gateway", "create", gateway)
    assert dmg("node", "register", "--key", keys["key1"], "--name", "silent").returncode == 0

    shown = dmg("gateway", "show", gateway)
    assert shown.returncode == 0, shown.stderr
    assert "status:   Offline" in shown.stdout
    assert "- no node can do work" in shown.stdout
    assert "- silent: Offline (never sent a heartbeat)" in shown.stdout
    listed = dmg("gateway", "list")
    assert "REASONS" in listed.stdout and "no node can do work; silent: Offline" in listed.stdout
    [row] = [g for g in dmg.json("gateway", "list") if g["name"] == gateway]
    assert row["reasons"] == ["no node can do work", "silent: Offline (never sent a heartbeat)"]
