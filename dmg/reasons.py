"""Status reasons as labels: what the metrics exporter (and anyone grouping reasons) uses.

A reason is a sentence (:mod:`dmg.status`, :mod:`dmg.inactivity`); a Prometheus label
must come from a small fixed set, so :func:`reason_kind` maps each sentence to one of
:data:`KINDS` and :func:`node_reasons` gives every node's reasons from the API's node rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: (label, words that start or appear in the reason), first match wins.
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("never_heartbeat", ("never sent a heartbeat",)),
    ("no_heartbeat", ("no heartbeat for",)),
    ("stopped", ("stopped",)),
    ("pool_not_running", ("worker pool not running",)),
    ("process_gone", ("its processes are gone",)),
    ("upgrading", ("draining for an update", "upgrade requested", "upgrading:")),
    ("proxy_differs", ("proxy differs",)),
    ("encryption_differs", ("encryption mode differs", "encryption differs")),
    ("broker_partition", ("cannot reach the other nodes through the broker",)),
    ("config_differs", (" differs: ", "its configuration differs")),
    ("version_differs", ("gateway runs",)),
    ("broker_unreachable", ("broker unreachable",)),
    ("cloud_unreachable", ("cloud unreachable",)),
    ("worker_not_responding", ("worker process not responding",)),
    ("reports_waiting", ("shard reports waiting", "reports waiting for their placement")),
    ("store_unreachable", ("store '", "cannot reach store")),
    ("credentials", ("credential",)),
    ("no_node", ("no node is registered", "no node can do work")),
)
KINDS = (*(label for label, _ in _RULES), "other")


def reason_kind(reason: str) -> str:
    """The label of one reason (one of :data:`KINDS`; ``other`` for none known)."""
    for label, words in _RULES:
        if any(reason.startswith(w) if label == "stopped" else w in reason for w in words):
            return label
    return "other"


def node_reasons(nodes: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{node name: its reasons}`` from the API's node rows (an Online node: ``[]``)."""
    return {str(n["name"]): [str(r) for r in n.get("reasons") or []] for n in nodes}


def node_reason_kinds(nodes: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{node name: the distinct labels of its reasons}``, sorted: for a metric such as
    ``dmg_node_status_reason{node, reason} 1``."""
    return {name: sorted({reason_kind(r) for r in reasons})
            for name, reasons in node_reasons(nodes).items()}
