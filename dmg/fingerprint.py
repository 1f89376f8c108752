"""A node's configuration fingerprint: the settings that must match across a gateway.

A node sends, with every heartbeat, :func:`config_parts` (named parts, each a short
string safe to show) and :func:`config_hash` of them. The cloud compares each node's
parts with the majority's (:func:`differences`) and names every part that differs:
``"proxy differs: http://a:3128 vs majority http://b:3128"``.

In the fingerprint, and why:

- ``encryption``: a node on TLS and one in plain text cannot share a site broker safely.
- ``proxy``: the gateway's HTTP proxy as this node applied it (its cloud and cloud-store
  traffic); shown without credentials, with a hash of the whole URL when it had any.
- ``heartbeat_interval``, ``offline_after``: every node judges the others' liveness by
  them; nodes that disagree declare each other dead at different times.
- ``lease_ttl``: the dispatcher lease's fencing period; a node with a shorter one takes
  the lease over while the holder still believes it holds it.
- ``broker_visibility_timeout``: when the broker hands unacked shards back; the nodes
  share one broker and must agree.
- ``shard_max_files``, ``shard_max_bytes``, ``max_queued_per_node``,
  ``shard_max_worker_deaths``: the dispatcher's planning and placement rules; whichever
  node holds the lease applies its own, so they must be the same on every node.

Out, and why: ``redis_url``/``cloud_url`` (nodes may name the same server differently,
and the URLs can hold passwords; reaching the broker is checked by peer presence
instead), per-node sizing (``node_concurrency``, ``autoscale_*``: nodes differ in size
on purpose), paths, names, log level, Flower's port and credentials (local matters).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence

from dmg.errors import safe_url

#: Settings (by attribute name of :class:`settings.Settings`) that are in the fingerprint.
SETTINGS_PARTS = ("heartbeat_interval", "offline_after", "lease_ttl", "broker_visibility_timeout",
                  "shard_max_files", "shard_max_bytes", "max_queued_per_node",
                  "shard_max_worker_deaths")
NO_PROXY = "none"


def redact_url(url: str) -> str:
    """``url`` safe to show (:func:`dmg.errors.safe_url`): no credentials; :data:`NO_PROXY`
    when empty."""
    return safe_url(url) if url else NO_PROXY


def config_parts(settings: object, *, encryption: str, proxy: str) -> dict[str, str]:
    """The named parts of a node's fingerprint, each safe to show (see the module docstring)."""
    parts = {"encryption": encryption or "none", "proxy": redact_url(proxy)}
    for name in SETTINGS_PARTS:
        parts[name] = str(getattr(settings, name))
    return parts


def config_hash(parts: Mapping[str, str]) -> str:
    """A stable hash of ``parts`` (sorted keys), as sent in ``config_fingerprint``."""
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()


def majority(prints: Sequence[Mapping[str, str]], *,
             prefer: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parts most nodes have, part by part. A tie goes to ``prefer``'s value (the
    dispatcher-lease holder's, whose lease the cloud issued) when it is among the tied ones;
    else the part has no majority and is left out, so nobody differs from it. One node's
    heartbeat can therefore never make another node Inactive in a two-node gateway."""
    names: list[str] = []
    for parts in prints:
        names += [n for n in parts if n not in names]
    chosen: dict[str, str] = {}
    for name in names:
        values = Counter(str(p[name]) for p in prints if name in p)
        top = max(values.values())
        tied = [v for v, count in values.items() if count == top]
        preferred = str(prefer[name]) if prefer is not None and name in prefer else None
        if len(tied) == 1:
            chosen[name] = tied[0]
        elif preferred in tied:
            chosen[name] = str(preferred)
    return chosen


def differences(parts: Mapping[str, str], reference: Mapping[str, str], *,
                against: str = "majority", skip: Sequence[str] = ()) -> list[str]:
    """One line per part of ``parts`` that differs from ``reference``:
    ``"<part> differs: <this node's> vs <against> <reference's>"``; parts one side lacks
    (an older node) are not compared."""
    lines = []
    for name in sorted(set(parts) & set(reference)):
        if name in skip or str(parts[name]) == str(reference[name]):
            continue
        lines.append(f"{name.replace('_', ' ')} differs: {parts[name]} vs {against} {reference[name]}")
    return lines
