"""Every attempt of a shard, as a user sees it after a node was SIGKILLed mid-copy.

One embedded site of two nodes (two jobs each), offline after 3 s; a throttled
folder copy runs; the worker node (not the dispatcher's) is SIGKILLed while it runs
a shard. Then ``dmg runs show RUN --attempts`` lists, for each shard the dead node
held, attempt 1 on the dead node ended "node offline" (or "worker died") and attempt
2 on the other node succeeded; every shard's attempts are numbered 1, 2, ... with
no gap, each ended, the last one succeeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmg.cli.demo import KIB
from dmg.embedded.faults import SiteUnderTest
from tests.cli.conftest import DmgRunner
from tests.ha.nodekit import dispatcher_of, run_ended, site_state, work_of
from tests.ha.sitekit import module_site, throttled_copy, wait_for

pytestmark = pytest.mark.integration

DEAD_ENDINGS = ("node offline", "worker died")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteUnderTest]:
    yield from module_site(tmp_path_factory, nodes=2, node_concurrency=2)


def test_a_killed_node_s_attempts_are_listed_with_how_they_ended(site: SiteUnderTest, tmp_path: Path) -> None:
    with site.client() as client, site_state(site) as state:
        copy = throttled_copy(client, site, tmp_path, files=12, bandwidth=24 * KIB, name="attempts")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        leader = wait_for(lambda: dispatcher_of(state) or "", timeout=10, what="a dispatcher")
        victim = wait_for(lambda: next((n for n in site.node_names if n != leader and state.running(n)), ""),
                          timeout=30, what="the worker node running a shard")
        held = work_of(state, victim)
        site.kill_node(victim)
        wait_for(lambda: run_ended(client, run_id), timeout=90, what="the run to end")
        assert client.run(run_id)["status"] == "Succeeded"

    dmg = DmgRunner(env={"DMG_CLOUD_URL": site.settings.cloud_url, "DMG_API_TOKEN": site.settings.api_token,
                         "DMG_DATA_DIR": str(tmp_path / "cli")}, cwd=tmp_path)
    attempts = dmg.json("runs", "show", run_id, "--attempts")["attempts"]
    by_shard: dict[str, list[dict[str, object]]] = {}
    for attempt in attempts:
        by_shard.setdefault(str(attempt["shard_id"]), []).append(attempt)
    for rows in by_shard.values():
        assert [r["attempt"] for r in rows] == list(range(1, len(rows) + 1)), rows  # no gap
        assert all(r["outcome"] for r in rows) and rows[-1]["outcome"] == "succeeded", rows
    for shard_id in held:
        rows = by_shard[shard_id]
        dead = [r for r in rows if r["node"] == victim]
        assert dead and all(r["outcome"] in DEAD_ENDINGS for r in dead), rows
        assert rows[-1]["node"] == leader and rows[-1]["attempt"] == len(rows) >= 2, rows

    text = dmg("runs", "show", run_id, "--attempts")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.split("attempts:\n", 1)[1].splitlines()
    killed_lines = [line for line in lines if f" {victim} " in line]
    assert killed_lines and all(line.endswith(DEAD_ENDINGS) for line in killed_lines), text.stdout
    print(text.stdout)
