"""Every attempt of a shard, recorded in the cloud from the reports the site already sends.

Given a real cloud server (SQLite; the PostgreSQL server too at the end), the
dispatcher's ``placed`` reports and the workers' reports build one row per attempt:
node, placed/started/ended, how it ended. Users read them with
``GET /runs/{id}/attempts``, ``GET /shards/{id}/attempts``, ``dmg runs show RUN
--attempts`` and the portal; a node reports only its own attempts and reads none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import BadInput, NotFound, PermissionDenied, Retryable
from tests.cli.conftest import DmgRunner, assert_one_line_error
from tests.cloud.conftest import Cloud, drop_dispatcher, launch, make_pipeline, make_site, place


def start_one_shard(cloud: Cloud, user: CloudClient, *, nodes: tuple[str, ...] = ("n1", "n2")
                    ) -> tuple[Any, str, str]:
    """A run of one activity of one shard, claimed and planned by n1; -> (site, run id, shard id)."""
    site = make_site(user, nodes=nodes)
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["n1"]) as dispatcher:
        [activity] = dispatcher.claim_activity_runs(epoch=1, wait=0)
        shard_id = f"{activity['id']}-0"
        dispatcher.plan_shards(activity["id"], epoch=1, shards=[{"id": shard_id, "index": 0, "files": 2}])
    return site, run["id"], shard_id


def failover(cloud: Cloud, site: Any, shard_id: str, *, ending: str = "node offline") -> None:
    """Attempt 1 placed on n1 and running; n1 lost (``ending``); attempt 2 on n2 succeeds."""
    with cloud.node(site.tokens["n1"]) as n1, cloud.node(site.tokens["n2"]) as n2:
        n1.report_shard(shard_id, {"attempt": 1, "node": "n1", "status": "placed", "placed_at": 1000.0,
                                   "wait_reason": ""})
        n1.report_shard(shard_id, {"attempt": 1, "node": "n1", "status": "running", "started_at": 1001.0,
                                   "files": 0, "bytes": 10})
        # n1's process is gone; n2 is the dispatcher now: it places attempt 2 on itself and
        # says why 1 ended.
        drop_dispatcher(cloud, site.tokens["n1"], epoch=1, gateway=site.gateway)
        n2.report_shard(shard_id, {"attempt": 2, "node": "n2", "status": "placed", "placed_at": 1012.0,
                                   "previous_ended": ending, "previous_ended_at": 1011.5, "epoch": 2})
        n2.report_shard(shard_id, {"attempt": 2, "node": "n2", "status": "running", "started_at": 1012.5})
        n2.report_shard(shard_id, {"attempt": 2, "node": "n2", "status": "succeeded", "ended_at": 1015.0,
                                   "files": 2, "bytes": 20})


def check_failover_rows(attempts: list[dict[str, Any]], shard_id: str) -> None:
    assert [(a["attempt"], a["node"], a["outcome"]) for a in attempts] == [
        (1, "n1", "node offline"), (2, "n2", "succeeded")]
    first, second = attempts
    assert (first["placed_at"], first["started_at"], first["ended_at"]) == (1000.0, 1001.0, 1011.5)
    assert (second["placed_at"], second["started_at"], second["ended_at"]) == (1012.0, 1012.5, 1015.0)
    assert second["waited"] == 0.5 and second["duration"] == 2.5 and second["bytes"] == 20
    assert [a["current"] for a in attempts] == [False, True]
    assert {a["shard_id"] for a in attempts} == {shard_id} and attempts[0]["shard_index"] == 0


def test_a_failover_shows_both_attempts_and_why_the_first_ended(cloud: Cloud, user: CloudClient) -> None:
    site, run_id, shard_id = start_one_shard(cloud, user)

    failover(cloud, site, shard_id)

    check_failover_rows(user.run_attempts(run_id), shard_id)
    check_failover_rows(user.shard_attempts(shard_id), shard_id)
    shown = user.run(run_id)
    assert shown["status"] == "Succeeded" and shown["activity_runs"][0]["shards"][0]["attempt"] == 2


def test_a_worker_report_before_the_placement_fences_then_the_reason_arrives(cloud: Cloud,
                                                                          user: CloudClient) -> None:
    """Placement reports travel in the background: the new attempt's worker may be first."""
    site, _run_id, shard_id = start_one_shard(cloud, user)
    with cloud.node(site.tokens["n1"]) as n1, cloud.node(site.tokens["n2"]) as n2:
        place(n1, shard_id, "n1")
        n1.report_shard(shard_id, {"attempt": 1, "status": "running"})
        with pytest.raises(Retryable):  # refused until its placement is known; sent again
            n2.report_shard(shard_id, {"attempt": 2, "status": "running"})
        assert [a["outcome"] for a in user.shard_attempts(shard_id)] == [""]
        n1.report_shard(shard_id, {"attempt": 2, "node": "n2", "status": "placed",
                                   "previous_ended": "worker died", "previous_ended_at": 5.0})
        n2.report_shard(shard_id, {"attempt": 2, "status": "running"})

    first, second = user.shard_attempts(shard_id)
    assert (first["outcome"], first["ended_at"]) == ("worker died", 5.0)
    assert (second["node"], second["status"], second["outcome"]) == ("n2", "running", "")


def test_a_failed_attempt_keeps_its_error_and_a_cancel_closes_open_ones(cloud: Cloud,
                                                                       user: CloudClient) -> None:
    site, run_id, shard_id = start_one_shard(cloud, user)
    with cloud.node(site.tokens["n1"]) as n1:
        place(n1, shard_id, "n1")
        n1.report_shard(shard_id, {"attempt": 1, "status": "failed", "error": "disk full: /data/out"})
    [failed] = user.run_attempts(run_id)
    assert (failed["outcome"], failed["error"]) == ("failed", "disk full: /data/out")
    assert failed["ended_at"] is not None

    site, run_id, shard_id = start_one_shard(cloud, user)
    with cloud.node(site.tokens["n1"]) as n1:
        n1.report_shard(shard_id, {"attempt": 1, "node": "n2", "status": "placed"})
    user.cancel_run(run_id)
    [cancelled] = user.run_attempts(run_id)
    assert (cancelled["node"], cancelled["outcome"]) == ("n2", "cancelled")


def test_a_node_reports_only_its_own_attempts(cloud: Cloud, user: CloudClient) -> None:
    site, run_id, shard_id = start_one_shard(cloud, user)
    with cloud.node(site.tokens["n1"]) as n1, cloud.node(site.tokens["n2"]) as n2:
        place(n1, shard_id, "n1")
        n1.report_shard(shard_id, {"attempt": 1, "status": "running", "bytes": 5})
        with pytest.raises(PermissionDenied, match="was not placed on node 'n2'"):
            n2.report_shard(shard_id, {"attempt": 1, "status": "succeeded"})
        with pytest.raises(PermissionDenied, match="cannot report for node 'n1'"):
            n2.report_shard(shard_id, {"attempt": 1, "node": "n1", "status": "failed", "error": "x"})
        with pytest.raises(PermissionDenied, match="not the gateway's dispatcher"):
            place(n2, shard_id, "n2")  # only the dispatcher reports placements
        # A placement report (the dispatcher's) never moves an attempt a node reported as its own.
        place(n1, shard_id, "n2")

    [attempt] = user.run_attempts(run_id)
    assert (attempt["node"], attempt["status"], attempt["outcome"]) == ("n1", "running", "")
    assert attempt["bytes"] == 5
    assert user.run(run_id)["activity_runs"][0]["shards"][0]["status"] == "running"


def test_nodes_cannot_read_attempts_and_bad_requests_are_one_line(cloud: Cloud, user: CloudClient) -> None:
    site, run_id, shard_id = start_one_shard(cloud, user)
    with cloud.node(site.tokens["n1"]) as n1:
        with pytest.raises(PermissionDenied):
            n1.run_attempts(run_id)
        with pytest.raises(PermissionDenied):
            n1.shard_attempts(shard_id)
        with pytest.raises(BadInput, match="unknown attempt ending 'node ofline'"):
            n1.report_shard(shard_id, {"attempt": 2, "status": "placed", "previous_ended": "node ofline"})
    with pytest.raises(NotFound, match="run 'no-such-run' does not exist"):
        user.run_attempts("no-such-run")
    with pytest.raises(NotFound, match="shard 'nope' does not exist"):
        user.shard_attempts("nope")
    assert user.run_attempts(run_id) == []  # the refused report recorded nothing
    answer = httpx.get(f"{cloud.url}/api/v1/runs/{run_id}/attempts")
    assert answer.status_code == 401 and "Traceback" not in answer.text


def test_dmg_runs_show_attempts(cloud: Cloud, user: CloudClient, tmp_path: Path) -> None:
    site, run_id, shard_id = start_one_shard(cloud, user)
    failover(cloud, site, shard_id)
    dmg = DmgRunner(env={"DMG_CLOUD_URL": cloud.url, "DMG_API_TOKEN": cloud.process.api_token,
                         "DMG_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)

    shown = dmg("runs", "show", run_id, "--attempts")

    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.split("attempts:\n", 1)[1].splitlines()
    assert table[0].split()[:4] == ["ACTIVITY", "SHARD", "ATTEMPT", "NODE"] and "HOW IT ENDED" in table[0]
    assert table[1].split()[:4] == ["copy0", "0", "1", "n1"] and table[1].endswith("node offline")
    assert table[2].split()[:4] == ["copy0", "0", "2", "n2"] and table[2].endswith("succeeded")
    assert "attempts:" not in dmg("runs", "show", run_id).stdout
    body = dmg.json("runs", "show", run_id, "--attempts")
    assert [a["attempt"] for a in body["attempts"]] == [1, 2]
    assert_one_line_error(dmg("runs", "show", "no-such-run", "--attempts"), contains="does not exist")


def test_the_portal_links_a_shard_to_its_attempts(cloud: Cloud, user: CloudClient) -> None:
    site, run_id, shard_id = start_one_shard(cloud, user)
    failover(cloud, site, shard_id, ending="worker died")
    auth = {"Authorization": f"Bearer {cloud.process.api_token}"}

    dashboard = httpx.get(cloud.url + "/", headers=auth).text
    assert f'href="/runs/{run_id}/attempts"' in dashboard
    run_page = httpx.get(f"{cloud.url}/runs/{run_id}", headers=auth).text
    assert f'href="/runs/{run_id}/attempts#shard-{shard_id}"' in run_page
    page = httpx.get(f"{cloud.url}/runs/{run_id}/attempts", headers=auth)
    assert page.status_code == 200
    assert f'id="shard-{shard_id}"' in page.text
    rows = page.text.split("<tr>")[2:]
    assert "n1" in rows[0] and "worker died" in rows[0]
    assert "n2" in rows[1] and "succeeded" in rows[1]
    assert httpx.get(f"{cloud.url}/runs/{run_id}/attempts").status_code == 401


@pytest.fixture(scope="module")
def pg_cloud(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    server = launch(tmp_path_factory.mktemp("pg-attempts"), db=postgres_url)
    try:
        yield server
    finally:
        server.stop()


def test_attempts_on_postgres(pg_cloud: Cloud) -> None:
    with pg_cloud.user() as user:
        test_a_failover_shows_both_attempts_and_why_the_first_ended(pg_cloud, user)
        test_a_worker_report_before_the_placement_fences_then_the_reason_arrives(pg_cloud, user)
        test_a_node_reports_only_its_own_attempts(pg_cloud, user)
