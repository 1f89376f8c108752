"""A shard spec as the planner writes it, for tests that place shards without planning them."""

from __future__ import annotations

from typing import Any

from dmg.connectors import StoreSpec
from dmg.shards import ShardSpec


def planned_spec(shard_id: str, *, source: str = "src", sink: str = "dst") -> dict[str, Any]:
    """The JSON of an empty shard reading store ``source`` and writing store ``sink``."""
    return ShardSpec(shard_id=shard_id, activity_run_id=shard_id.rsplit("-", 1)[0], index=0,
                     source_store=StoreSpec(source, "file", f"/tmp/{source}"), source_path="",
                     sink_store=StoreSpec(sink, "file", f"/tmp/{sink}"), sink_path="",
                     entries=(), options={}).to_json()
