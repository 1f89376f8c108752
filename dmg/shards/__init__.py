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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dmg.shards.outcome import MalformedOutcome, ShardOutcome
    from dmg.shards.spec import KIND_COPY, KIND_PART, MalformedSpec, PartSpec, ShardSpec, ShardStores

#: Each name and the submodule it lives in, imported on first use (PEP 562): the CLI reads
#: only the status vocabulary (``dmg.shards.status``) and must not load the connectors.
_LAZY = {"MalformedOutcome": "outcome", "ShardOutcome": "outcome", "KIND_COPY": "spec", "KIND_PART": "spec",
         "MalformedSpec": "spec", "PartSpec": "spec", "ShardSpec": "spec",
         "ShardStores": "spec"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value

__all__ = ["KIND_COPY", "KIND_PART", "MalformedOutcome", "MalformedSpec", "PartSpec", "ShardOutcome",
           "ShardSpec", "ShardStores"]
