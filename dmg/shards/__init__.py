"""The shard wire format, defined once: used by the planner that writes it and every node
that reads it.

==============  ==============================================================
``status``      one status vocabulary: the Redis record's states, the cloud's
                statuses, a runner's outcomes, and the table mapping them
``spec``        :class:`ShardSpec` (what a shard is), :class:`PartSpec` (one part
                of a very large object), :class:`MalformedSpec`
``outcome``     :class:`ShardOutcome` (what a runner returns for one attempt)
==============  ==============================================================

Leaf package: it imports only :mod:`dmg.connectors.base` and :mod:`dmg.errors`.
"""

from __future__ import annotations

from dmg.shards.outcome import MalformedOutcome, ShardOutcome
from dmg.shards.spec import KIND_COPY, KIND_PART, MalformedSpec, PartSpec, ShardSpec

__all__ = ["KIND_COPY", "KIND_PART", "MalformedOutcome", "MalformedSpec", "PartSpec", "ShardOutcome",
           "ShardSpec"]
