"""The per-file report, end to end through real components: a shard run by the node
runtime reports to the real cloud, which keeps each file's result with the activity
run; `dmg runs report` downloads it as JSON Lines through the real executable."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib
import xxhash

from dmg.cloud.client import CloudClient
from dmg.errors import NotFound, StaleAttempt
from dmg.shards.status import OUTCOME_SUCCEEDED
from dmg.site.state import SiteState
from tests.cli.conftest import DMG, DmgRunner, assert_one_line_error, clean_environ
from tests.cloud.conftest import Cloud, make_pipeline, make_site, place
from tests.workers.support import file_store, shard_spec, write_files
from workers.run.reporter import HttpReporter
from workers.run.shard import run_shard


def planned_shard(cloud: Cloud, user: CloudClient) -> dict[str, Any]:
    """A run whose one activity run is claimed (by n1) and planned as one shard."""
    site = make_site(user, nodes=("n1", "n2"))
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["n1"]) as node:
        [activity] = node.claim_activity_runs(epoch=1, wait=0)
        shard_id = f"{activity['id']}-00000"
        node.plan_shards(activity["id"], epoch=1, shards=[{"id": shard_id, "index": 0, "files": 3}])
        place(node, shard_id, "n1", epoch=1)  # a worker reports only an attempt placed on it
    return {"run": run["id"], "activity": activity, "shard": shard_id, "token": site.tokens["n1"],
            "tokens": site.tokens, "gateway": site.gateway}


def result(path: str, status: str = "copied", **extra: Any) -> dict[str, Any]:
    return {"path": path, "source": "in/" + path, "bytes": 10, "checksum": "0" * 32, "status": status,
            "verified": "size", "tries": 1, **extra}


@pytest.fixture
def dmg(cloud: Cloud, tmp_path: Path) -> DmgRunner:
    data_dir = tmp_path / "cli-data"
    data_dir.mkdir()
    return DmgRunner(env={"DMG_DATA_DIR": str(data_dir), "DMG_CLOUD_URL": cloud.url,
                          "DMG_API_TOKEN": cloud.process.api_token}, cwd=tmp_path)


def test_file_results_are_kept_per_path_and_fenced_by_attempt(cloud: Cloud, user: CloudClient) -> None:
    plan = planned_shard(cloud, user)
    with cloud.node(plan["token"]) as node, cloud.node(plan["tokens"]["n2"]) as other:
        node.report_shard(plan["shard"], {"attempt": 1, "status": "running", "node": "n1"})
        node.report_files(plan["shard"], attempt=1, node="n1",
                          files=[result("b"), result("a", "failed", error="denied")])
        node.report_files(plan["shard"], attempt=1, node="n1", files=[result("a")])  # a retry of a
        place(node, plan["shard"], "n2", attempt=2, epoch=1)
        other.report_shard(plan["shard"], {"attempt": 2, "status": "running", "node": "n2"})
        with pytest.raises(StaleAttempt):
            node.report_files(plan["shard"], attempt=1, node="n1", files=[result("c")])
        other.report_files(plan["shard"], attempt=2, node="n2", files=[result("b", "skipped")])

    rows = user.run_report(plan["run"])

    assert [(r["path"], r["status"], r["attempt"], r["node"]) for r in rows] == [
        ("a", "copied", 1, "n1"), ("b", "skipped", 2, "n2")]
    assert rows[0]["activity"] == "copy0" and rows[0]["shard"] == plan["shard"]
    assert rows[0]["run"] == plan["run"] and rows[0]["source"] == "in/a" and rows[0]["error"] == ""
    assert [r["path"] for r in user.run_report(plan["run"], status="skipped")] == ["b"]
    with pytest.raises(NotFound):
        user.run_report("no-such-run")


def test_a_shard_report_carries_its_file_results_in_batches(cloud: Cloud, user: CloudClient) -> None:
    plan = planned_shard(cloud, user)
    many = [result(f"f{i:05d}") for i in range(1500)]  # more than one request holds
    with cloud.node(plan["token"]) as node:
        node.report_shard(plan["shard"], {"attempt": 1, "status": "succeeded", "node": "n1", "files": 1500,
                                          "file_results": many})
    rows = user.run_report(plan["run"])
    assert len(rows) == 1500 and rows[0]["path"] == "f00000" and rows[-1]["path"] == "f01499"
    assert user.run(plan["run"])["activity_runs"][0]["shards"][0]["files"] == 1500


def test_bad_file_results_are_refused_with_the_field(cloud: Cloud, user: CloudClient) -> None:
    plan = planned_shard(cloud, user)
    with cloud.node(plan["token"]) as node:
        for bad in ({"path": "", "status": "copied"}, {"path": "x", "status": "lost"},
                    {"path": "x", "status": "copied", "bytes": -1}):
            reply = httpx.post(f"{cloud.url}/api/v1/shards/{plan['shard']}/files",
                               headers={"Authorization": f"Bearer {plan['token']}"},
                               json={"attempt": 1, "files": [bad]})
            assert reply.status_code == 400 and reply.json()["error"] == "bad_input", bad
        with pytest.raises(NotFound):
            node.report_files("no-such-shard", attempt=1, node="n1", files=[result("x")])


def test_a_shard_run_reports_every_file_and_the_cli_downloads_it(
        cloud: Cloud, user: CloudClient, redis_client: redis_lib.Redis, tmp_path: Path,
        dmg: DmgRunner) -> None:
    plan = planned_shard(cloud, user)
    source, sink = file_store("src", tmp_path / "src"), file_store("dst", tmp_path / "dst")
    write_files(tmp_path / "src" / "in", {"a.bin": 70_000, "sub/b.bin": 300_000, "c.txt": 0})
    state = SiteState(redis_client, plan["gateway"])
    state.save_shard(plan["shard"], shard_spec(plan["shard"], source, "in", sink, "out"))
    with cloud.node(plan["token"]) as node:
        reporter = HttpReporter(node)
        first = run_shard(plan["shard"], state.new_attempt(plan["shard"], "n1"), node="n1", state=state,
                          reporter=reporter)
        second_attempt = state.new_attempt(plan["shard"], "n1")
        place(node, plan["shard"], "n1", attempt=second_attempt, epoch=1)
        second = run_shard(plan["shard"], second_attempt, node="n1", state=state, reporter=reporter)
    assert first.status == second.status == OUTCOME_SUCCEEDED

    out = tmp_path / "report.jsonl"
    done = dmg("runs", "report", plan["run"], "--output", str(out))

    assert done.returncode == 0, done.stderr
    assert "3 file(s) written" in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == ["out/a.bin", "out/c.txt", "out/sub/b.bin"]
    assert {(r["status"], r["attempt"], r["node"]) for r in rows} == {("skipped", 2, "n1")}  # 2nd run
    expected = hashlib.md5((tmp_path / "src/in/sub/b.bin").read_bytes(), usedforsecurity=False).hexdigest()
    assert rows[2]["bytes"] == 300_000 and rows[2]["checksum"] in ("", expected)
    shard = user.run(plan["run"])["activity_runs"][0]["shards"][0]
    assert shard["status"] == "succeeded" and shard["files"] == 0 and shard["files_total"] == 0  # all skipped

    stdout = dmg("runs", "report", plan["run"], "--status", "skipped")
    assert stdout.returncode == 0 and len(stdout.stdout.splitlines()) == 3


def test_the_first_run_reports_copies_with_checksums(
        cloud: Cloud, user: CloudClient, redis_client: redis_lib.Redis, tmp_path: Path) -> None:
    plan = planned_shard(cloud, user)
    source, sink = file_store("src", tmp_path / "src"), file_store("dst", tmp_path / "dst")
    write_files(tmp_path / "src" / "in", {"a.bin": 1000, "b.bin": 2000})
    state = SiteState(redis_client, plan["gateway"])
    state.save_shard(plan["shard"], shard_spec(plan["shard"], source, "in", sink, "out"))
    with cloud.node(plan["token"]) as node:
        run_shard(plan["shard"], state.new_attempt(plan["shard"], "n1"), node="n1", state=state,
                  reporter=HttpReporter(node))
    rows = user.run_report(plan["run"])
    assert [(r["path"], r["status"], r["bytes"]) for r in rows] == [("out/a.bin", "copied", 1000),
                                                                    ("out/b.bin", "copied", 2000)]
    for row in rows:
        data = (tmp_path / "src/in" / Path(row["path"]).name).read_bytes()
        # file -> file: copied by the kernel, verified by XXH3 of both sides (the cloud keeps the prefix)
        assert row["checksum"] == "xxh3:" + xxhash.xxh3_128_hexdigest(data)
        assert row["verified"] == "size,xxh3" and row["attempt"] == 1 and row["tries"] == 1
    shown = user.run(plan["run"])
    assert shown["status"] == "Succeeded" and shown["activity_runs"][0]["bytes"] == 3000

    with httpx.Client(base_url=cloud.url) as browser:  # the portal's run page, signed in
        assert browser.post("/login", data={"token": cloud.process.api_token}).status_code == 303
        page = browser.get(f"/runs/{plan['run']}").text
    assert "2 files, 2.9 KiB" in page and "100 %" in page
    assert '<td class="num">2 / 0 / 0</td>' in page  # files copied / skipped / failed
    download = httpx.get(f"{cloud.url}/runs/{plan['run']}/report.jsonl",
                         headers={"Authorization": f"Bearer {cloud.process.api_token}"})
    assert download.status_code == 200 and len(download.text.splitlines()) == 2
    assert httpx.get(f"{cloud.url}/runs/{plan['run']}/report.jsonl").status_code == 401


def test_report_errors_are_one_line(dmg: DmgRunner, tmp_path: Path) -> None:
    assert_one_line_error(dmg("runs", "report", "no-such-run"), contains="run 'no-such-run' does not exist")
    assert_one_line_error(dmg("runs", "report", "x", "--output", str(tmp_path / "nowhere" / "r.jsonl")),
                          contains="is not a directory")
    assert not (tmp_path / "nowhere").exists()


def test_the_bandwidth_of_a_running_run_is_set_in_the_site(
        cloud: Cloud, user: CloudClient, dmg: DmgRunner, redis_url: str,
        redis_client: redis_lib.Redis) -> None:
    plan = planned_shard(cloud, user)
    state = SiteState(redis_client, plan["gateway"])

    done = dmg("runs", "bandwidth", plan["run"], "10M", DMG_REDIS_URL=redis_url)

    assert done.returncode == 0, done.stderr
    assert "10.0 MiB/s" in done.stdout and "copy0" in done.stdout
    assert state.bandwidth(plan["activity"]["id"]) == 10 * 1024 * 1024
    assert dmg("runs", "bandwidth", plan["run"], "0", "--activity", "copy0",
               DMG_REDIS_URL=redis_url).returncode == 0
    assert state.bandwidth(plan["activity"]["id"]) == 0

    assert_one_line_error(dmg("runs", "bandwidth", plan["run"], "fast", DMG_REDIS_URL=redis_url),
                          contains="'fast' is not a rate")
    assert_one_line_error(dmg("runs", "bandwidth", plan["run"], "1M", "--activity", "nope",
                              DMG_REDIS_URL=redis_url), contains="no activity named nope")
    from dmg.procs import free_port

    assert_one_line_error(dmg("runs", "bandwidth", plan["run"], "1M",
                              DMG_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"),
                          contains="cannot reach the site's Redis")


def test_a_reader_that_closes_the_pipe_is_not_an_error(cloud: Cloud, user: CloudClient,
                                                       dmg: DmgRunner) -> None:
    """`dmg runs report RUN | head -1` prints one line and nothing on stderr: a closed pipe
    is the reader's choice, not a bug (the report is larger than a pipe's buffer)."""
    plan = planned_shard(cloud, user)
    with cloud.node(plan["token"]) as node:
        node.report_shard(plan["shard"], {"attempt": 1, "status": "succeeded", "node": "n1", "files": 1500,
                                          "file_results": [result(f"f{i:05d}") for i in range(1500)]})

    pipeline = f"'{DMG}' runs report {plan['run']} | head -1; echo \"dmg exit ${{PIPESTATUS[0]}}\""
    piped = subprocess.run(pipeline, shell=True, executable="/bin/bash", capture_output=True, text=True,
                           timeout=60, env=clean_environ(**dmg.env))

    first, status = piped.stdout.splitlines()
    assert json.loads(first)["path"] == "f00000"
    assert piped.stderr == ""
    assert status in ("dmg exit 0", "dmg exit 1")  # 1: it noticed the closed pipe, quietly


def test_a_file_result_in_json_has_every_field_as_the_dataclass_has_it() -> None:
    import dataclasses

    from dmg.transfer import FileResult

    result = FileResult("a/b", 3, "xxh3:00", "copied", "", source="b", verified="size", tries=1,
                        started=1.5, ended=2.5)
    assert result.to_json() == dataclasses.asdict(result)
