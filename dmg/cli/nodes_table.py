"""The node table shown by ``dmg node list`` and ``dmg gateway show``."""

from __future__ import annotations

from typing import Any

from dmg.cli.output import Column, column, computed, human_ago, human_bytes, human_percent, reasons_text


def _slots(row: dict[str, Any]) -> str:
    running, limit = row.get("running"), row.get("limit")
    if running is None and limit is None:
        return "-"
    return f"{running if running is not None else '-'}/{limit if limit is not None else '-'}"


def _network(row: dict[str, Any]) -> str:
    received, sent = row.get("network_in"), row.get("network_out")
    if received is None and sent is None:
        return "-"
    fmt = lambda v: "-" if v is None else f"{human_bytes(v)}/s"  # noqa: E731
    return f"in {fmt(received)}, out {fmt(sent)}"


def _own(row: dict[str, Any]) -> str:
    """The node's own process tree's CPU and memory (the host's are in CPU / MEMORY FREE)."""
    if row.get("proc_mem_bytes") is None:
        return "-"
    return f"{human_percent(row.get('proc_cpu_percent'))}, {human_bytes(row.get('proc_mem_bytes'))}"


def _moved(row: dict[str, Any]) -> str:
    if row.get("moved_in_bytes") is None:
        return "-"
    return f"in {human_bytes(row.get('moved_in_bytes'))}, out {human_bytes(row.get('moved_out_bytes'))}"


NODE_COLUMNS: list[Column] = [
    column("NAME", "name"),
    column("STATUS", "status"),
    column("REASONS", "reasons", reasons_text),
    column("VERSION", "version"),
    column("ROLE", "role"),
    computed("RUNNING/LIMIT", _slots),
    column("SIZED BY", "sized_by"),
    column("CPU", "cpu_percent", human_percent),
    column("MEMORY FREE", "memory_available", human_bytes),
    computed("NETWORK", _network),
    computed("NODE CPU/MEM", _own),
    computed("MOVED", _moved),
    column("CREDENTIALS", "credential_status"),
    column("LAST HEARTBEAT", "last_heartbeat", human_ago),
]
