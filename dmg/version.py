"""dmg's version and the version rules of a gateway (DESIGN.md, "Status rules").

- The gateway's version is the version most of its nodes run
  (:func:`majority_version`). **Tie rule:** when two versions are run by as many
  nodes each, the dispatcher-lease holder's version wins if it is one of them (the
  lease is the cloud's word, a version is a node's: one node claiming a version must
  not outvote the other node of a two-node gateway); with no holder among them, the
  higher one. A tie happens half-way through a rolling upgrade; the dispatcher goes
  last, and hands its lease over before it restarts, so the gateway then moves on.
- A node on another version than the gateway's is Limited, with both versions in
  the reason (:func:`version_reason`), and gets no new work while a node on the
  gateway's version can take it (:func:`dmg.placement.choose_node`).
- A node older than the gateway cannot register (:func:`registration_refusal`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dmg")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"


def parse(text: str) -> tuple[int, ...]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; non-numeric parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


def majority_version(versions: Iterable[str], *, prefer: str | None = None) -> str | None:
    """The version most nodes run; a tie goes to ``prefer`` (the lease holder's version)
    when it is among the tied ones, else to the higher version (see the module docstring).
    Empty strings (a node that never said) do not count. None if no node."""
    counts = Counter(v for v in versions if v)
    if not counts:
        return None
    return max(counts, key=lambda v: (counts[v], v == prefer, parse(v)))


def version_reason(node_version: str, gateway_version: str | None) -> str:
    """Why a node is Limited for its version: ``"runs 0.2.0, gateway runs 0.1.0"``; "" when
    it runs the gateway's version (or either is not known)."""
    if not node_version or not gateway_version or parse(node_version) == parse(gateway_version):
        return ""
    return f"runs {node_version}, gateway runs {gateway_version}"


def registration_refusal(node_version: str, gateway_version: str | None, *, gateway: str) -> str:
    """Why a node of ``node_version`` cannot register with ``gateway`` (on
    ``gateway_version``): it is older. "" when it may."""
    if not gateway_version or parse(node_version) >= parse(gateway_version):
        return ""
    return (f"this node runs dmg {node_version}, older than gateway {gateway!r}'s version "
            f"{gateway_version}: a node older than its gateway cannot register")
