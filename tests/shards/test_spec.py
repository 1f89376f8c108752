"""The shard spec and part spec: round trips, the previous version's JSON, malformed specs refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dmg.connectors import Entry, StoreSpec
from dmg.errors import DmgError, Fatal
from dmg.shards import KIND_PART, MalformedSpec, PartSpec, ShardSpec, ShardStores

SOURCE = StoreSpec("src", "file", "/data/in")
SINK = StoreSpec("dst", "s3", "s3://bucket/out", {"region": "eu-west-1"})
BIG = Entry("in/big.bin", 10 * 2**20, 1_700_000_000.5, "abc")


def previous_copy_spec() -> dict[str, Any]:
    """What the planner of the previous version wrote by hand for an incremental copy shard."""
    return {
        "shard_id": "ar1-00000", "activity_run_id": "ar1", "index": 0,
        "source": {"store": SOURCE.to_json(), "path": "in"},
        "sink": {"store": SINK.to_json(), "path": "out"},
        "entries": [{**Entry("in/a", 3, 1.0).to_json(), "sink": Entry("out/a", 3, 1.0, "x").to_json()},
                    {**Entry("in/b", -1, 2.0).to_json(), "sink": None}],
        "options": {"overwrite": "if_newer"},
    }


def previous_part_spec() -> dict[str, Any]:
    """What the planner of the previous version wrote by hand for a part shard."""
    part = {"object": "ar1:0", "entry": BIG.to_json(), "target": "out/big.bin", "part_number": 2,
            "parts_total": 2, "offset": 8 * 2**20, "length": 2 * 2**20, "handle": {"upload_id": "u1"}}
    return {"shard_id": "ar1-00001", "activity_run_id": "ar1", "index": 1, "kind": "part",
            "source": {"store": SOURCE.to_json(), "path": "in"},
            "sink": {"store": SINK.to_json(), "path": "out"},
            "entries": [BIG.to_json()], "options": {"split_above": "8MiB"}, "part": part}


def test_a_copy_spec_of_the_previous_version_reads_and_writes_back_unchanged() -> None:
    body = previous_copy_spec()

    spec = ShardSpec.from_json(json.loads(json.dumps(body)))

    assert (spec.shard_id, spec.activity_run_id, spec.index, spec.kind) == ("ar1-00000", "ar1", 0, "copy")
    assert (spec.source_store, spec.sink_store) == (SOURCE, SINK)
    assert spec.entries == (Entry("in/a", 3, 1.0), Entry("in/b", -1, 2.0))
    assert spec.sink_hints == {"in/a": Entry("out/a", 3, 1.0, "x"), "in/b": None}
    assert (spec.files_total, spec.bytes_total, spec.store_names) == (2, 3, ["src", "dst"])
    assert spec.to_json() == body


def test_a_part_spec_of_the_previous_version_reads_and_writes_back_unchanged() -> None:
    body = previous_part_spec()

    spec = ShardSpec.from_json(json.loads(json.dumps(body)))

    assert spec.kind == KIND_PART and spec.part is not None
    assert spec.part == PartSpec("ar1:0", BIG, "out/big.bin", 2, 2, 8 * 2**20, 2 * 2**20, {"upload_id": "u1"})
    assert spec.sink_hints == {}
    assert spec.to_json() == body
    assert PartSpec.from_json(spec.part.to_json()) == spec.part


def test_a_spec_without_sink_hints_round_trips_without_them() -> None:
    spec = ShardSpec("ar2-00003", "ar2", 3, SOURCE, "", SINK, "x", (Entry("a", 1, 0.0),), {})

    body = json.loads(json.dumps(spec.to_json()))

    assert "sink" not in body["entries"][0] and "kind" not in body and "part" not in body
    assert ShardSpec.from_json(body) == spec


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    inner = body
    for key in path[:-1]:
        inner = inner[key]
    del inner[path[-1]]
    return body


@pytest.mark.parametrize(("body", "message"), [
    (None, "shard spec is malformed (expected an object, got NoneType)"),
    ("ar1-00000", "shard spec is malformed (expected an object, got str)"),
    ([], "shard spec is malformed (expected an object, got list)"),
    (_without(previous_copy_spec(), "shard_id"), "shard spec is malformed (missing field 'shard_id')"),
    (_without(previous_copy_spec(), "sink"), "shard spec is malformed (missing field 'sink')"),
    ({**previous_copy_spec(), "source": "src"}, "shard source is malformed (expected an object, got str)"),
    ({**previous_copy_spec(), "entries": "in/a"}, "entries is a str, not a list"),
    ({**previous_copy_spec(), "entries": [{"path": "a", "size": "big", "mtime": 0}]},
     "shard spec is malformed (ValueError"),
    ({**previous_copy_spec(), "entries": [{"path": "a", "size": 1}]},
     "shard spec is malformed (missing field 'mtime')"),
    ({**previous_copy_spec(), "index": "first"}, "shard spec is malformed (ValueError"),
    ({**previous_copy_spec(), "kind": "tape"}, "unknown kind 'tape'; expected one of copy, part"),
    (_without(previous_part_spec(), "part"),
     "part shard spec is malformed (expected an object, got NoneType)"),
    (_without(previous_part_spec(), "part", "handle"),
     "part shard spec is malformed (missing field 'handle')"),
    ({**previous_part_spec(), "part": {**previous_part_spec()["part"], "part_number": 3}},
     "part shard spec is malformed (part 3 of 2"),
    ({**previous_part_spec(), "part": {**previous_part_spec()["part"], "offset": -1}},
     "part shard spec is malformed (part 2 of 2, offset -1"),
])
def test_a_malformed_spec_is_refused_with_one_clear_line(body: Any, message: str) -> None:
    with pytest.raises(MalformedSpec) as refused:
        ShardSpec.from_json(body)

    assert isinstance(refused.value, Fatal)
    text = str(refused.value)
    assert message in text and "\n" not in text
    assert "check that every node runs the same version" in text


def test_a_store_without_its_location_is_bad_input_not_a_key_error() -> None:
    body = previous_copy_spec()
    del body["sink"]["store"]["location"]

    with pytest.raises(DmgError, match="store definition is missing location"):
        ShardSpec.from_json(body)


@pytest.mark.parametrize("body", [previous_copy_spec(), previous_part_spec()])
def test_the_stores_of_a_spec_read_alone_are_the_full_specs_stores(body: dict[str, Any]) -> None:
    stores = ShardStores.from_json(json.loads(json.dumps(body)))
    spec = ShardSpec.from_json(body)

    assert (stores.source_store, stores.sink_store) == (spec.source_store, spec.sink_store)
    assert stores.store_names == spec.store_names == ["src", "dst"]


def test_the_stores_are_read_without_the_entries_which_the_runner_checks() -> None:
    body = {**previous_copy_spec(), "entries": [{"path": "a", "size": "big", "mtime": 0}]}

    assert ShardStores.from_json(body).store_names == ["src", "dst"]
    with pytest.raises(MalformedSpec):
        ShardSpec.from_json(body)


@pytest.mark.parametrize(("body", "message"), [
    ("ar1-00000", "shard spec is malformed (expected an object, got str)"),
    (_without(previous_copy_spec(), "sink"), "shard spec is malformed (missing field 'sink')"),
    ({**previous_copy_spec(), "source": "src"}, "shard source is malformed (expected an object, got str)"),
    ({**previous_copy_spec(), "kind": "tape"}, "unknown kind 'tape'; expected one of copy, part"),
])
def test_malformed_stores_are_refused_with_one_clear_line(body: Any, message: str) -> None:
    with pytest.raises(MalformedSpec) as refused:
        ShardStores.from_json(body)

    text = str(refused.value)
    assert message in text and "\n" not in text
