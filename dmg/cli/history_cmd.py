"""``dmg node history NAME``: a node's metrics over time, from the cloud's history."""

from __future__ import annotations

import re
import time
from typing import Any

import click

from dmg.cli.common import gateway_of_node, user_client
from dmg.cli.output import column, emit_json, emit_table, human_bytes
from dmg.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_RESOLUTION = {0: "beat", 60: "1 min", 600: "10 min"}


def parse_duration(text: str) -> float:
    """``90`` / ``90s`` / ``15m`` / ``1h`` / ``2d`` / ``1w`` -> seconds; BadInput otherwise."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise BadInput(f"--since {text!r} is not a duration", hint="say e.g. 90s, 15m, 1h, 2d or 1w")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _when(value: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(value)))


COLUMNS = [
    column("TIME (UTC)", "at", _when),
    column("OVER", "resolution", lambda r: _RESOLUTION.get(int(r), f"{r} s")),
    column("CPU", "cpu_percent", lambda v: f"{float(v):.0f} %"),
    column("MEMORY FREE", "memory_available", human_bytes),
    column("JOBS", "running", lambda v: f"{float(v):.1f}".removesuffix(".0")),
    column("LIMIT", "limit", lambda v: f"{float(v):.1f}".removesuffix(".0")),
    column("NET IN/s", "network_in", human_bytes),
    column("NET OUT/s", "network_out", human_bytes),
]


@click.command("history")
@click.argument("name")
@click.option("--since", default="1h", show_default=True, metavar="DURATION",
              help="How far back: 90s, 15m, 1h, 2d, 1w.")
@click.option("--gateway", "gateway_name", default=None,
              help="The node's gateway (default: the one gateway with a node NAME).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def history(name: str, since: str, gateway_name: str | None, as_json: bool) -> None:
    """Print node NAME's CPU, free memory, jobs running / limit and network over time.

    The cloud keeps every heartbeat for an hour, 1-minute averages for a day, 10-minute
    averages after that, up to DMG_CLOUD_HISTORY_RETENTION.
    """
    seconds = parse_duration(since)
    with user_client() as client:
        gateway = gateway_of_node(client, name, gateway_name)
        body = client.node_history(gateway, name, since=seconds)
    if as_json:
        emit_json(body)
        return
    emit_table(body["samples"], COLUMNS, as_json=False,
               empty=f"no history of node {name!r} in the last {since}")


def register(group: click.Group) -> None:
    group.add_command(history)
