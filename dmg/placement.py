"""Placement maths: which node takes the next shard.

Free slots = limit - running - queued messages. A node's queued messages are its queued
shards less those *carried* behind the first shard of a packed message
(:mod:`dispatcher.packing`): a packed message occupies one pool process for all its
shards, run one after another. Without packing, queued messages = queued shards.

A node is eligible when it is Online, not draining and can reach the shard's stores. The
dispatcher sends each shard to the eligible node with the most free slots, and holds shards back when every
node's queue is full (back-pressure keeps per-node queues short, so losing a
node strands little work).

Versions (:mod:`dmg.version`): a node on another version than the majority of the
nodes' gets no new work while a node on the majority version can take it; when none
can, it does (during a rolling upgrade the gateway keeps moving data).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dmg.version import majority_version, parse


@dataclass
class NodeLoad:
    name: str
    limit: int
    running: int = 0
    queued: int = 0
    online: bool = True
    draining: bool = False
    unreachable_stores: frozenset[str] = field(default_factory=frozenset)
    #: Credentials (by name) whose current version this node does not hold yet.
    stale_credentials: frozenset[str] = field(default_factory=frozenset)
    #: The dmg version the node runs ("" unknown: counts as the majority's).
    version: str = ""
    #: Queued shards riding behind the first shard of a packed message (in ``queued`` too).
    carried: int = 0
    #: The most shards the node takes in one message (0: one, it runs no packed message).
    carries: int = 0

    @property
    def free_slots(self) -> int:
        """Pool processes neither running a message nor promised to a queued one."""
        return self.limit - self.running - (self.queued - self.carried)

    def can_take(self, stores: Iterable[str], *, max_queued: int, credentials: Iterable[str] = ()) -> bool:
        """True when this node may receive one more shard touching ``stores`` with ``credentials``."""
        if not self.online or self.draining or self.limit <= 0:
            return False
        if self.unreachable_stores.intersection(stores) or self.stale_credentials.intersection(credentials):
            return False
        return self.free_slots + max_queued > 0


def choose_node(
    nodes: Sequence[NodeLoad], *, stores: Iterable[str] = (), max_queued: int = 0,
    credentials: Iterable[str] = (), prefer_version: str | None = None,
) -> NodeLoad | None:
    """The eligible node with the most free slots (ties: the fewest queued, then name).

    Nodes on the gateway's version come first (:func:`dmg.version.majority_version`; a
    version tie goes to ``prefer_version``, the dispatcher's own, as the lease holder).

    Returns None when no node can take the shard now. Does not change ``nodes``;
    call :func:`record_placement` after sending.
    """
    wanted = frozenset(stores)
    needed = frozenset(credentials)
    eligible = [n for n in nodes if n.can_take(wanted, max_queued=max_queued, credentials=needed)]
    if not eligible:
        return None
    majority = majority_version((n.version for n in nodes), prefer=prefer_version)
    eligible = on_majority_version(eligible, majority) or eligible
    return max(eligible, key=lambda n: (n.free_slots, -n.queued, _reverse(n.name)))


def on_majority_version(nodes: Sequence[NodeLoad], majority: str | None) -> list[NodeLoad]:
    """The nodes running ``majority`` (or not saying their version); all of them when
    ``majority`` is None."""
    if majority is None:
        return list(nodes)
    return [n for n in nodes if not n.version or parse(n.version) == parse(majority)]


def record_placement(node: NodeLoad, *, shards: int = 1) -> None:
    """``node`` was sent one message carrying ``shards`` shards."""
    node.queued += shards
    node.carried += shards - 1


def _reverse(name: str) -> tuple[int, ...]:
    # max() with names: prefer the alphabetically first name on a tie.
    return tuple(-ord(c) for c in name)
