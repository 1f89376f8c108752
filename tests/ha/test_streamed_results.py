"""A shard's file results leave the node while it copies, and stay exact across a worker death.

Given a one-node embedded site and one throttled shard of 200 small files (about 6 s),
when some of its file results have reached the cloud while the shard still runs (they are
streamed in reports of 64 or more, not all at the end), and the pool process running it is then
killed (SIGKILL) so that the same attempt runs again from the start, then the run succeeds,
and the cloud's per-file report lists every source file exactly once, copied, with its size,
its MD5 and the checks that verified it (the rerun's results of files reported before the
kill replace them, they are not added).
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from dmg.cli.demo import KIB
from dmg.cloud.client import CloudClient
from dmg.embedded.site import EmbeddedSite
from tests.ha.nodekit import run_ended, site_state
from tests.ha.sitekit import (
    assert_copied_exactly,
    module_site,
    throttled_copy,
    wait_for,
)
from tests.ha.test_worker_death import only_shard, running_pid

pytestmark = pytest.mark.integration

FILES = 200


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSite]:
    yield from module_site(tmp_path_factory, nodes=1, node_concurrency=1, shard_max_worker_deaths=2,
                           shard_max_files=FILES)


def file_report(client: CloudClient, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.iter_run_report(run_id) if line.strip()]


def test_file_results_streamed_during_a_shard_stay_exact_after_its_worker_is_killed(
        site: EmbeddedSite, tmp_path: Path) -> None:
    with site.client() as client, site_state(site) as state:
        copy = throttled_copy(client, site, tmp_path, files=FILES, bandwidth=512 * KIB, name="streamed")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        shard_id = wait_for(lambda: only_shard(site, run_id), timeout=30, what="the run planned")
        victim = wait_for(lambda: running_pid(state, shard_id), timeout=30, what="the shard running")

        reported = wait_for(lambda: len(file_report(client, run_id)), timeout=30,
                            what="file results at the cloud while the shard runs")
        assert client.run(run_id)["status"] == "InProgress"
        assert reported < FILES  # streamed: they did not wait for the shard's end
        psutil.Process(victim).send_signal(signal.SIGKILL)
        wait_for(lambda: running_pid(state, shard_id, not_pid=victim), timeout=30,
                 what="the shard running again in a new pool process")
        wait_for(lambda: run_ended(client, run_id), timeout=60, what="the run to end")

        assert_copied_exactly(client, run_id, copy)
        rows = file_report(client, run_id)
        sources = sorted(p.relative_to(copy.source).as_posix() for p in copy.source.rglob("*") if p.is_file())
        assert sorted(row["source"] for row in rows) == sources  # each file once
        for row in rows:
            data = (copy.source / row["source"]).read_bytes()
            assert row["status"] == "copied", row
            assert row["bytes"] == len(data), row
            # Throttled, so streamed (not the kernel copy): MD5, staged bytes checked by CRC-32.
            assert row["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest(), row
            assert row["verified"] == "size,staged-crc32", row
            assert (row["node"], row["attempt"]) == ("node1", 1), row
