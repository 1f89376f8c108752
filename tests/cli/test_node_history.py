"""``dmg node history NAME``: a node's metrics over time, from the cloud's history.

Given a gateway whose node sent three heartbeats, when ``dmg node history`` runs, then
it prints one row per beat (table and --json), and bad input (a duration it cannot
read, an unknown node) is one ``error:`` line.
"""

from __future__ import annotations

import uuid

from dmg.cli.history_cmd import parse_duration
from dmg.cloud.client import CloudClient
from dmg.cloud.server import CloudProcess
from tests.cli.conftest import DmgRunner, assert_one_line_error


def test_durations_read_as_a_person_writes_them() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "15m", "1h", "2d", "1w", "1.5h")] == [
        90, 90, 900, 3600, 172800, 604800, 5400]


def test_history_prints_every_beat_and_refuses_bad_input(dmg: DmgRunner, cli_cloud: CloudProcess) -> None:
    gateway = f"gw-{uuid.uuid4().hex[:8]}"
    with CloudClient(cli_cloud.url, token=cli_cloud.api_token) as user:
        key = user.create_gateway(gateway)["key1"]
        token = user.register_node(key=key, name="hist1", version="1.0.0")["token"]
    with CloudClient(cli_cloud.url, token=token) as node:
        for running in (1, 2, 3):
            node.heartbeat({"running": running, "limit": 4, "cpu_percent": 10.0 * running,
                            "memory_available": 2 * 1024**3, "network_in": 1024.0})

    body = dmg.json("node", "history", "hist1", "--gateway", gateway, "--since", "10m")
    assert body["node"] == "hist1" and body["gateway"] == gateway
    assert [s["running"] for s in body["samples"]] == [1, 2, 3]
    assert {s["resolution"] for s in body["samples"]} == {0}

    table = dmg("node", "history", "hist1", "--gateway", gateway)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert lines[0].startswith("TIME (UTC)") and len(lines) == 4
    assert "30 %" in lines[3] and "2.0 GiB" in lines[3] and "1.0 KiB" in lines[3]

    assert_one_line_error(dmg("node", "history", "hist1", "--gateway", gateway, "--since", "soon"),
                          contains="is not a duration")
    assert_one_line_error(dmg("node", "history", "ghost", "--gateway", gateway),
                          contains="is not registered")
