"""The portal: sign in with the API token; gateways, a gateway's nodes (with charts, keys
and actions), runs, a run, an activity run; actions need a session and its CSRF token;
a node's token opens nothing."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
import httpx
import pytest

from dmg.cli.lazygroup import subcommands
from dmg.cli.main import cli
from tests.cli.test_quoted_commands import resolve
from tests.cloud.conftest import Cloud, Site, make_pipeline, make_site, place


def test_the_portal_needs_the_api_token(cloud: Cloud) -> None:
    with httpx.Client(base_url=cloud.url) as browser:
        first = browser.get("/")
        assert first.status_code == 401 and "<form" in first.text
        wrong = browser.post("/login", data={"token": "guess"})
        assert wrong.status_code == 401 and "not the cloud" in wrong.text
        signed_in = browser.post("/login", data={"token": cloud.process.api_token}, follow_redirects=True)
        assert signed_in.status_code == 200 and "Gateways" in signed_in.text
        assert cloud.process.api_token not in browser.cookies.get("dmg_portal", "")
        browser.get("/logout")
        assert browser.get("/").status_code == 401


def test_a_session_cookie_stops_working_after_logout(cloud: Cloud) -> None:
    """The cookie is a server-side session: a copy kept elsewhere dies with the logout."""
    with httpx.Client(base_url=cloud.url) as browser:
        browser.post("/login", data={"token": cloud.process.api_token})
        cookie = browser.cookies.get("dmg_portal", "")
        assert cookie
        with httpx.Client(base_url=cloud.url, cookies={"dmg_portal": cookie}) as copy:
            assert copy.get("/").status_code == 200
            other = httpx.post(cloud.url + "/login", data={"token": cloud.process.api_token})
            browser.get("/logout")
            assert copy.get("/").status_code == 401
            assert copy.get("/runs/x/attempts").status_code == 401
            assert copy.post("/runs/x/cancel").status_code == 401
        # Another browser's session is its own: still signed in.
        second = other.cookies.get("dmg_portal", "")
        assert second and second != cookie
        assert httpx.get(cloud.url + "/", cookies={"dmg_portal": second}).status_code == 200


@contextmanager
def signed_in(cloud: Cloud) -> Iterator[httpx.Client]:
    """A browser with a portal session (cookie), as a person signs in."""
    with httpx.Client(base_url=cloud.url, timeout=30) as browser:
        assert browser.post("/login", data={"token": cloud.process.api_token}).status_code == 303
        yield browser


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def busy_site(cloud: Cloud) -> tuple[Site, str, str]:
    """A gateway: alpha (dispatcher, at its limit), beta (Limited), one run with a shard on
    beta that waited; -> (site, run id, activity run id)."""
    with cloud.user() as user:
        site = make_site(user, nodes=("alpha", "beta"))
        run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["alpha"]) as alpha, cloud.node(site.tokens["beta"]) as beta:
        alpha.heartbeat({"role": "dispatcher", "running": 4, "limit": 4, "cpu_percent": 12.0,
                         "network_in": 2048.0, "credential_status": "in sync"})
        beta.heartbeat({"role": "worker", "running": 1, "limit": 8,
                        "problems": ["cannot reach the <broker>"]})
        [activity] = alpha.claim_activity_runs(epoch=1, wait=0)
        shard = f"{activity['id']}-0"
        alpha.plan_shards(activity["id"], epoch=1, shards=[{"id": shard, "index": 0}])
        place(alpha, shard, "beta")
        beta.report_shard(shard, {"attempt": 1, "status": "running", "wait_reason": "alpha was full"})
    return site, run["id"], activity["id"]


def test_the_gateway_page_shows_every_node_figure_and_the_hint_at_the_limit(cloud: Cloud) -> None:
    site, _run, _activity = busy_site(cloud)
    with signed_in(cloud) as browser:
        listing = browser.get("/").text
        assert f'href="/gateways/{site.gateway}"' in listing and "Limited" in listing
        page = browser.get(f"/gateways/{site.gateway}")
        assert page.status_code == 200
        html = page.text
        assert 'hx-get="/gateways/' in html and 'hx-trigger="every 3s"' in html  # refreshes in place
        assert '<script src="/portal-static/htmx.min.js"' in html and "https://" not in html  # no CDN
        assert "beta: Limited (cannot reach the &lt;broker&gt;)" in html and "<broker>" not in html
        alpha_row = html.split('<tr data-node="alpha">')[1].split("</tr>")[0]
        assert "dispatcher" in alpha_row and "4 / 4" in alpha_row and "12 %" in alpha_row
        assert "2.0 KiB/s in" in alpha_row
        assert "we suggest doubling it (to 8)" in alpha_row
        beta_row = html.split('<tr data-node="beta">')[1].split("</tr>")[0]
        assert "1 / 8" in beta_row and "we suggest" not in beta_row
        assert html.count("<svg") == 8  # CPU, memory, jobs, throughput for each node
        assert "jobs: running 4, limit 4" in html
        assert site.keys["key1"] in html and site.keys["key2"] in html
        live = browser.get(f"/gateways/{site.gateway}/live").text
        assert "<html" not in live and '<tr data-node="alpha">' in live


def test_the_add_node_command_is_a_real_command_with_the_gateway_key(cloud: Cloud) -> None:
    site, _run, _activity = busy_site(cloud)
    with signed_in(cloud) as browser:
        html = browser.get(f"/gateways/{site.gateway}").text
    block = re.search(r'<pre id="register-command">(.*?)</pre>', html, flags=re.S)
    assert block
    for line in block.group(1).strip().splitlines():
        words = shlex.split(line)
        assert words[0] == "dmg" and resolve(words[1:]) is None, line
        command: click.Command = cli
        for word in words[1:3]:
            assert isinstance(command, click.Group)
            command = subcommands(command)[word]
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
        given = {word for word in words if word.startswith("--")}
        assert given <= known, (line, given - known)
    assert f"--key {site.keys['key1']}" in html and f"--cloud {cloud.url}" in html


def test_the_run_and_activity_pages_show_shards_attempts_and_why_they_waited(cloud: Cloud) -> None:
    _site, run_id, activity_id = busy_site(cloud)
    with signed_in(cloud) as browser:
        run_page = browser.get(f"/runs/{run_id}").text
        assert f'href="/runs/{run_id}/activities/{activity_id}"' in run_page
        assert f'href="/runs/{run_id}/attempts#shard-{activity_id}-0"' in run_page
        assert "alpha was full" in run_page and 'hx-get="/runs/' in run_page
        assert "beta" in browser.get(f"/runs/{run_id}/live").text
        page = browser.get(f"/runs/{run_id}/activities/{activity_id}")
        assert page.status_code == 200
        assert "alpha was full" in page.text and "(current)" in page.text and "0 file(s)" in page.text
        assert run_id in browser.get("/runs").text
        missing = browser.get(f"/runs/{run_id}/activities/nope")
        assert missing.status_code == 404 and "is not part of run" in missing.text
        assert "Traceback" not in missing.text


def test_a_node_token_opens_nothing_of_the_portal(cloud: Cloud) -> None:
    site, run_id, activity_id = busy_site(cloud)
    node = {"Authorization": f"Bearer {site.tokens['alpha']}"}
    # (every portal route with every kind of token: tests/cloud/test_scopes.py)
    for path in (f"/gateways/{site.gateway}", f"/runs/{run_id}/activities/{activity_id}"):
        answer = httpx.get(cloud.url + path, headers=node)
        assert answer.status_code == 401 and '<form method="post" action="/login">' in answer.text, path
    for action in ("limit", "drain", "undrain", "remove"):
        answer = httpx.post(f"{cloud.url}/gateways/{site.gateway}/nodes/alpha/{action}", headers=node,
                            data={"limit": "8"})
        assert answer.status_code == 401, action
    with cloud.user() as user:
        assert [n["name"] for n in user.list_nodes(site.gateway)] == ["alpha", "beta"]


@pytest.mark.parametrize("token", ["", "0" * 64])
def test_a_forged_post_is_refused_with_403(cloud: Cloud, token: str) -> None:
    site, _run, _activity = busy_site(cloud)
    with signed_in(cloud) as browser:
        form = {"limit": "16"} | ({"csrf": token} if token else {})
        answer = browser.post(f"/gateways/{site.gateway}/nodes/alpha/limit", data=form)
        assert answer.status_code == 403
        assert "no valid CSRF token" in answer.text and "Traceback" not in answer.text
        removed = browser.post(f"/gateways/{site.gateway}/nodes/beta/remove", data=form)
        assert removed.status_code == 403
    with cloud.node(site.tokens["alpha"]) as alpha:
        assert alpha.heartbeat({"running": 4, "limit": 4}).get("requests", {}) == {}
    with cloud.user() as user:
        assert len(user.list_nodes(site.gateway)) == 2


def test_another_sessions_csrf_token_does_not_work(cloud: Cloud) -> None:
    site, _run, _activity = busy_site(cloud)
    with signed_in(cloud) as mine, signed_in(cloud) as theirs:
        their_token = csrf_of(theirs.get(f"/gateways/{site.gateway}").text)
        answer = mine.post(f"/gateways/{site.gateway}/nodes/alpha/drain", data={"csrf": their_token})
        assert answer.status_code == 403


def test_limit_and_drain_reach_the_node_in_its_heartbeat_answer_until_done(cloud: Cloud) -> None:
    site, _run, _activity = busy_site(cloud)
    base = f"/gateways/{site.gateway}/nodes"
    with signed_in(cloud) as browser, cloud.node(site.tokens["alpha"]) as alpha:
        token = csrf_of(browser.get(f"/gateways/{site.gateway}").text)
        done = browser.post(f"{base}/alpha/limit", data={"limit": "8", "csrf": token})
        assert done.status_code == 303
        assert done.headers["location"] == f"/gateways/{site.gateway}?done=limit&node=alpha&limit=8"
        assert "alpha: limit 8 asked" in browser.get(done.headers["location"]).text
        # A link made elsewhere cannot put its own words on the page.
        forged = browser.get(f"/gateways/{site.gateway}?done=limit&node=Call+us+now&limit=8").text
        assert "Call us" not in forged and 'id="notice"' not in forged
        assert browser.post(f"{base}/alpha/drain", data={"csrf": token}).status_code == 303
        assert "limit 8 asked, not applied yet" in browser.get(f"{base.rsplit('/', 1)[0]}/live").text
        assert alpha.heartbeat({"running": 4, "limit": 4})["requests"] == {"limit": 8, "drain": True}
        assert alpha.heartbeat({"running": 4, "limit": 8})["requests"] == {"drain": True}
        assert "requests" not in alpha.heartbeat({"running": 4, "limit": 8, "draining": True})
        assert "asked, not applied yet" not in browser.get(f"/gateways/{site.gateway}").text
        bad = browser.post(f"{base}/alpha/limit", data={"limit": "lots", "csrf": token})
        assert bad.status_code == 400 and "whole number" in bad.text and "Traceback" not in bad.text
        ghost = browser.post(f"{base}/ghost/limit", data={"limit": "2", "csrf": token})
        assert ghost.status_code == 404 and "ghost" in ghost.text and "is not registered" in ghost.text
        gone = browser.post(f"{base}/beta/remove", data={"csrf": token})
        assert gone.status_code == 303
    with cloud.user() as user:
        assert [n["name"] for n in user.list_nodes(site.gateway)] == ["alpha"]


def test_a_key_is_regenerated_only_from_a_signed_in_form(cloud: Cloud) -> None:
    site, _run, _activity = busy_site(cloud)
    with signed_in(cloud) as browser:
        token = csrf_of(browser.get(f"/gateways/{site.gateway}").text)
        path = f"/gateways/{site.gateway}/keys/regenerate"
        assert browser.post(path, data={"key": "key1"}).status_code == 403
        assert browser.post(path, data={"key": "key3", "csrf": token}).status_code == 400
        assert browser.post(path, data={"key": "key1", "csrf": token}).status_code == 303
    with cloud.user() as user:
        keys = user.gateway_keys(site.gateway)
    assert keys["key1"] != site.keys["key1"] and keys["key2"] == site.keys["key2"]


def test_actions_are_audited_without_secrets(start_cloud: Callable[..., Cloud]) -> None:
    audited = start_cloud(log_level="INFO")
    site, _run, _activity = busy_site(audited)
    with signed_in(audited) as browser:
        session = browser.cookies.get("dmg_portal", "")
        token = csrf_of(browser.get(f"/gateways/{site.gateway}").text)
        base = f"/gateways/{site.gateway}/nodes/alpha"
        assert browser.post(f"{base}/limit", data={"limit": "6", "csrf": token}).status_code == 303
        assert browser.post(f"{base}/drain", data={"csrf": "forged"}).status_code == 403
        assert browser.post(f"/gateways/{site.gateway}/keys/regenerate",
                            data={"key": "key2", "csrf": token}).status_code == 303
        with audited.user() as user:
            new_key = user.gateway_keys(site.gateway)["key2"]
    audited.stop()
    log = audited.process.log_path.read_text()
    assert f"portal action action=limit gateway={site.gateway} node=alpha by=session:" in log
    assert f"portal action refused (CSRF) action=drain gateway={site.gateway} node=alpha" in log
    assert f"portal action action=regenerate key gateway={site.gateway}" in log
    for secret in (session, token, audited.process.api_token, new_key, site.keys["key1"]):
        assert secret not in log
