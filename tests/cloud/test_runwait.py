"""The long-poll on a run's state (``GET /runs/{id}/wait``): prompt on a change, a clean
timeout, users only."""

from __future__ import annotations

import threading
import time

import httpx

from dmg.cli.runview import next_state, wait_for_run
from dmg.cloud.client import CloudClient
from dmg.errors import NotFound
from tests.cloud.conftest import Cloud, make_pipeline, make_site


def _queued_run(user: CloudClient) -> tuple[str, str]:
    """(run id, a node token of its gateway) for a run that stays Queued until claimed."""
    site = make_site(user, nodes=("n1",))
    run = user.run_pipeline(make_pipeline(user, site.gateway))
    return str(run["id"]), site.tokens["n1"]


def _finish_later(cloud: Cloud, token: str, *, after: float) -> threading.Thread:
    """Claim the gateway's activity run and plan it with no shards (it succeeds) after ``after`` s."""
    def finish() -> None:
        time.sleep(after)  # the waiter must be waiting before the change
        with cloud.node(token) as node:
            for activity in node.claim_activity_runs(epoch=1, wait=0):
                node.plan_shards(activity["id"], epoch=1, shards=[])
    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    return thread


def test_the_wait_returns_promptly_when_the_status_changes(cloud: Cloud, user: CloudClient) -> None:
    run_id, token = _queued_run(user)
    changer = _finish_later(cloud, token, after=0.5)
    start = time.monotonic()
    run = next_state(user, run_id, seen="Queued", wait=20)
    took = time.monotonic() - start
    changer.join(10)
    assert run["id"] == run_id and run["status"] in ("InProgress", "Succeeded")  # claimed, then planned
    assert 0.4 < took < 3.0, took  # waited for the change, not for the 20 s timeout


def test_the_wait_times_out_cleanly_with_the_run_as_it_is(cloud: Cloud, user: CloudClient) -> None:
    run_id, _token = _queued_run(user)
    start = time.monotonic()
    run = next_state(user, run_id, seen="Queued", wait=0.6)
    took = time.monotonic() - start
    assert run["status"] == "Queued" and run["activity_runs"]
    assert 0.55 < took < 5.0, took


def test_an_empty_or_different_status_answers_at_once(cloud: Cloud, user: CloudClient) -> None:
    run_id, _token = _queued_run(user)
    for seen in ("", "InProgress"):
        start = time.monotonic()
        assert next_state(user, run_id, seen=seen, wait=20)["status"] == "Queued"
        assert time.monotonic() - start < 3.0


def test_the_cli_wait_follows_a_run_to_its_end(cloud: Cloud, user: CloudClient) -> None:
    run_id, token = _queued_run(user)
    seen: list[str] = []
    changer = _finish_later(cloud, token, after=0.3)
    final = wait_for_run(user, run_id, timeout=30, on_progress=lambda r: seen.append(str(r["status"])))
    changer.join(10)
    assert final["status"] == "Succeeded" and seen[0] == "Queued" and seen[-1] == "Succeeded"


def test_the_cli_wait_gives_up_after_its_timeout(cloud: Cloud, user: CloudClient) -> None:
    run_id, _token = _queued_run(user)
    start = time.monotonic()
    try:
        wait_for_run(user, run_id, timeout=1.0)
    except TimeoutError as exc:
        assert run_id in str(exc)
    else:
        raise AssertionError("a run that never ends must time out")
    assert time.monotonic() - start < 5.0


def test_a_node_token_gets_403_and_an_unknown_run_404(cloud: Cloud, user: CloudClient) -> None:
    run_id, token = _queued_run(user)
    url = f"{cloud.url}/api/v1/runs/{run_id}/wait"
    refused = httpx.get(url, params={"status": "Queued", "timeout": 5},
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert refused.status_code == 403 and set(refused.json()) == {"error", "message", "hint"}
    assert httpx.get(url, timeout=30).status_code == 401
    try:
        next_state(user, "no-such-run", seen="Queued", wait=1)
    except NotFound as exc:
        assert "no-such-run" in str(exc)
    else:
        raise AssertionError("an unknown run must be NotFound")


def test_a_bad_timeout_is_a_clear_error(cloud: Cloud, user: CloudClient) -> None:
    run_id, _token = _queued_run(user)
    headers = {"Authorization": f"Bearer {cloud.process.api_token}"}
    for bad in ("99", "-1", "soon"):
        answer = httpx.get(f"{cloud.url}/api/v1/runs/{run_id}/wait", params={"timeout": bad},
                           headers=headers, timeout=30)
        assert answer.status_code in (400, 422), answer.text
        assert "timeout" in answer.text and "Traceback" not in answer.text


def test_the_wait_answers_within_100_ms_of_the_run_s_end(cloud: Cloud, user: CloudClient) -> None:
    # given a run in progress, and a user waiting on it for longer than the fast checks last
    # (runwait.FAST_FOR: from then on a check every 0.2 s), so only a wake-up is prompt
    run_id, token = _queued_run(user)
    with cloud.node(token) as node:
        (activity,) = node.claim_activity_runs(epoch=1, wait=0)
        ended: list[float] = []

        def end_it() -> None:
            time.sleep(5.6)
            node.plan_shards(activity["id"], epoch=1, shards=[])  # no shards: the run succeeds
            ended.append(time.monotonic())

        ender = threading.Thread(target=end_it, daemon=True)
        ender.start()
        # when the run ends
        run = next_state(user, run_id, seen="InProgress", wait=20)
        seen = time.monotonic()
        ender.join(10)
    # then the wait answered at once: within 100 ms of the request that ended it
    assert run["status"] == "Succeeded"
    assert seen - ended[0] < 0.1, f"seen {seen - ended[0]:.3f} s after the run's end"
