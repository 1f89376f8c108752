"""The rule that splits one large file across nodes (:func:`dispatcher.splitting.large_file_split`).

A local file to S3 (a sink that sends a file's parts from the file itself, each checked by
S3) is split only above 8 GiB unless the activity says ``split_above``; file → file keeps
the 256 MiB default. Real Redis, a real moto server, the real planner; the large files are
sparse (no disk used).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher.planner import plan_activity_run
from dispatcher.splitting import FROM_FILE_SPLIT_ABOVE, large_file_split
from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.connectors.s3 import S3Connector
from dmg.site.state import SiteState
from dmg.transfer.split import SplitOptions
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.servers.s3 import S3Server
from tests.workers.support import file_store

MIB = 1024 * 1024
SETTINGS = Settings(shard_max_files=4)


def factory(server: S3Server) -> Callable[[StoreSpec], Connector]:
    def make(spec: StoreSpec) -> Connector:
        return S3Connector(spec, credential=server.credential) if spec.type == "s3" else connector_for(spec)
    return make


def sparse(folder: Path, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "big.bin", "wb") as f:
        f.truncate(size)


def kinds(tmp_path: Path, state: SiteState, sink: StoreSpec, options: dict[str, Any],
          server: S3Server) -> list[str | None]:
    run = {"id": "ar1", "run_id": "r1", "name": "big",
           "source": {"store": file_store("src", tmp_path / "src").to_json(), "path": ""},
           "sink": {"store": sink.to_json(), "path": ""}, "options": {"overwrite": "always", **options}}
    result = plan_activity_run(run, state=state, cloud=MemoryCloud(), epoch=1, settings=SETTINGS,
                               connector_factory=factory(server))
    return [(state.shard(s["id"]) or {})["spec"].get("kind") for s in result.shards]


def s3_sink(server: S3Server, bucket: str) -> StoreSpec:
    return StoreSpec("dst", "s3", f"s3://{bucket}/out", {"endpoint_url": server.endpoint_url,
                                                         "region": server.region})


def test_a_one_gib_file_to_s3_goes_in_one_shard_and_no_upload_is_begun(
        tmp_path: Path, state: SiteState, s3_server: S3Server, s3_bucket: str) -> None:
    sparse(tmp_path / "src", 1024 * MIB)

    assert kinds(tmp_path, state, s3_sink(s3_server, s3_bucket), {}, s3_server) == [None]
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_a_file_to_a_file_store_is_split_above_the_default(tmp_path: Path, state: SiteState,
                                                           s3_server: S3Server) -> None:
    sparse(tmp_path / "src", 300 * MIB)

    assert kinds(tmp_path, state, file_store("dst", tmp_path / "dst"), {}, s3_server) == ["part"] * 5


def test_split_above_given_splits_a_file_to_s3_as_asked(tmp_path: Path, state: SiteState,
                                                        s3_server: S3Server, s3_bucket: str) -> None:
    sparse(tmp_path / "src", 300 * MIB)

    assert kinds(tmp_path, state, s3_sink(s3_server, s3_bucket), {"split_above": 256 * MIB},
                 s3_server) == ["part"] * 5


@pytest.mark.parametrize(("size", "split"), [(FROM_FILE_SPLIT_ABOVE, False),
                                             (FROM_FILE_SPLIT_ABOVE + 1, True)])
def test_the_rule_for_a_local_file_to_s3_is_above_8_gib(tmp_path: Path, s3_server: S3Server,
                                                         s3_bucket: str, size: int, split: bool) -> None:
    source = connector_for(file_store("src", tmp_path))
    sink = factory(s3_server)(s3_sink(s3_server, s3_bucket))

    rule = large_file_split(SplitOptions.from_json({}), {}, source=source, sink=sink)

    assert rule.splits(size) is split
    assert large_file_split(SplitOptions.from_json({}), {}, source=source,
                            sink=connector_for(file_store("dst", tmp_path / "d"))).splits(300 * MIB)
