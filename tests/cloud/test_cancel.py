"""Cancelling a run in the cloud: API, CLI, portal, and what the dispatcher is told.

Given a real cloud server, a run that has not ended becomes Cancelled with every
activity run that had not ended; it is never claimed; the gateway's dispatcher
learns of it (in its claims' answers, or ``/dispatch/cancelled``; a waiting claim returns at once); a run
that already ended, or does not exist, is a clear 4xx and nothing changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import Conflict, NotFound
from tests.cli.conftest import DmgRunner, assert_one_line_error
from tests.cloud.conftest import Cloud, make_pipeline, make_site, place, unique


@pytest.fixture
def http(cloud: Cloud) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cloud.url, timeout=30,
                      headers={"Authorization": f"Bearer {cloud.process.api_token}"}) as client:
        yield client


def test_a_queued_run_is_cancelled_never_claimed_and_cannot_be_cancelled_twice(user: CloudClient,
                                                                               cloud: Cloud) -> None:
    site = make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway, activities=2))

    cancelled = user.cancel_run(run["id"])

    assert cancelled["status"] == "Cancelled"
    assert [a["status"] for a in cancelled["activity_runs"]] == ["Cancelled", "Cancelled"]
    assert cancelled["activity_runs"][0]["error"] == "cancelled by a user"
    with cloud.node(site.tokens["n1"]) as node:
        assert node.claim_activity_runs(epoch=1, wait=0) == []
        assert set(node.cancelled_activity_runs()) == {a["id"] for a in cancelled["activity_runs"]}
    with pytest.raises(Conflict) as again:
        user.cancel_run(run["id"])
    assert "already ended (Cancelled)" in again.value.message
    with pytest.raises(NotFound):
        user.cancel_run(unique("absent"))


def test_a_claimed_run_is_cancelled_and_a_waiting_claim_returns_at_once(user: CloudClient,
                                                                        cloud: Cloud) -> None:
    site = make_site(user)
    pipeline = make_pipeline(user, site.gateway)
    first = user.run_pipeline(pipeline)
    with cloud.node(site.tokens["n1"]) as node:
        [claimed] = node.claim_activity_runs(epoch=1, wait=0)
        assert claimed["run_id"] == first["id"]
        waited: list[float] = []

        def long_poll() -> None:
            began = time.monotonic()
            with cloud.node(site.tokens["n1"]) as poller:
                assert poller.claim_activity_runs(epoch=1, wait=20) == []
            waited.append(time.monotonic() - began)

        poller = threading.Thread(target=long_poll)
        poller.start()
        time.sleep(1.0)
        assert user.cancel_run(first["id"])["status"] == "Cancelled"
        poller.join(20)
        assert waited and waited[0] < 5, waited  # woken by the cancel, not by the 20 s timeout
        assert node.cancelled_activity_runs() == [claimed["id"]]
        # Late reports of its shards do not bring it back.
        node.plan_shards(claimed["id"], epoch=1, shards=[{"id": f"{claimed['id']}-00000", "index": 0}])
        place(node, f"{claimed['id']}-00000", "n1")
        node.report_shard(f"{claimed['id']}-00000", {"attempt": 1, "status": "succeeded", "node": "n1"})
    assert user.run(first["id"])["status"] == "Cancelled"
    other = make_site(user)
    with cloud.node(other.tokens["n1"]) as stranger:
        assert stranger.cancelled_activity_runs() == []  # another gateway's cancel is not its business


def test_the_cli_cancels_and_says_so_and_a_finished_run_is_one_line_error(user: CloudClient, cloud: Cloud,
                                                                          tmp_path: Path) -> None:
    site = make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    dmg = DmgRunner(env={"DMG_CLOUD_URL": cloud.url, "DMG_API_TOKEN": cloud.process.api_token,
                         "DMG_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
    done = dmg("runs", "cancel", run["id"])
    assert done.returncode == 0, done.stderr
    assert f"run {run['id']} cancelled (Cancelled)" in done.stdout
    assert_one_line_error(dmg("runs", "cancel", run["id"]), contains="already ended (Cancelled)")


def test_the_portal_shows_a_cancel_button_that_cancels(user: CloudClient, http: httpx.Client,
                                                       cloud: Cloud) -> None:
    site = make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    page = http.get("/")
    assert f'action="/runs/{run["id"]}/cancel"' in page.text
    answer = http.post(f"/runs/{run['id']}/cancel", follow_redirects=False)
    assert answer.status_code == 303
    assert user.run(run["id"])["status"] == "Cancelled"
    assert f'action="/runs/{run["id"]}/cancel"' not in http.get("/").text
    assert httpx.post(f"{cloud.url}/runs/{run['id']}/cancel").status_code == 401  # not signed in


def test_a_claim_answer_carries_its_own_gateway_s_cancels_and_no_other_s(user: CloudClient,
                                                                         cloud: Cloud) -> None:
    """The dispatcher learns of cancels from its claim's answer (no request of its own), and
    a node of another gateway learns nothing of them from its own claims."""
    site, other = make_site(user), make_site(user)
    run = user.run_pipeline(make_pipeline(user, site.gateway, activities=2))
    cancelled = {a["id"] for a in user.cancel_run(run["id"])["activity_runs"]}
    for token, expected in ((site.tokens["n1"], cancelled), (other.tokens["n1"], set())):
        answer = httpx.post(f"{cloud.url}/api/v1/dispatch/claim", json={"epoch": 1, "wait": 0}, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["activity_runs"] == [] and set(answer.json()["cancelled"]) == expected
    with cloud.node(site.tokens["n1"]) as node:
        assert node.claim_activity_runs(epoch=1, wait=0) == []
        assert set(node.cancelled_activity_runs()) == cancelled  # from the claim's answer


def test_a_claim_that_takes_runs_carries_the_cancels_too(user: CloudClient, cloud: Cloud) -> None:
    """The answer of a claim that took runs lists the gateway's cancels as well (read in the
    claim's own transaction), so the dispatcher drops a cancelled run's shards at once."""
    site = make_site(user)
    gone = user.run_pipeline(make_pipeline(user, site.gateway))
    cancelled = {a["id"] for a in user.cancel_run(gone["id"])["activity_runs"]}
    queued = user.run_pipeline(make_pipeline(user, site.gateway, activities=2))
    answer = httpx.post(f"{cloud.url}/api/v1/dispatch/claim", json={"epoch": 1, "wait": 0}, timeout=30,
                        headers={"Authorization": f"Bearer {site.tokens['n1']}"})
    assert answer.status_code == 200, answer.text
    assert {a["id"] for a in answer.json()["activity_runs"]} == {a["id"] for a in queued["activity_runs"]}
    assert set(answer.json()["cancelled"]) == cancelled


class _OlderCloud(BaseHTTPRequestHandler):
    """The two dispatch routes as a cloud of the previous version answers them: the claim's
    answer has no ``cancelled``. Counts the cancel checks it is asked."""

    asked: list[str] = []

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer({"activity_runs": []})

    def do_GET(self) -> None:
        self.asked.append(self.path)
        self._answer({"activity_runs": ["cancelled-1"]})

    def log_message(self, *_args: Any) -> None:
        pass


def test_a_dispatcher_of_this_version_asks_an_older_cloud_for_its_cancels() -> None:
    """Rolling upgrade: against a cloud whose claim answers carry no cancels, the client asks
    ``GET /dispatch/cancelled`` as before (at most once a second)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OlderCloud)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node = CloudClient(f"http://127.0.0.1:{server.server_address[1]}", token="t")
        assert node.claim_activity_runs(epoch=1, wait=0) == []
        assert node.cancelled_activity_runs() == ["cancelled-1"]
        assert node.cancelled_activity_runs() == ["cancelled-1"]  # within the second: asked once
        assert _OlderCloud.asked == ["/api/v1/dispatch/cancelled"]
        node.close()
    finally:
        server.shutdown()
        server.server_close()
