"""The read-only portal at ``/``: sign in with the API token, see gateways, nodes, runs."""

from __future__ import annotations

import httpx

from tests.cloud.conftest import Cloud, make_pipeline, make_site, place


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


def test_the_portal_shows_nodes_and_runs_with_shards(cloud: Cloud) -> None:
    with cloud.user() as user:
        site = make_site(user, nodes=("alpha", "beta"))
        run = user.run_pipeline(make_pipeline(user, site.gateway))
    with cloud.node(site.tokens["alpha"]) as alpha, cloud.node(site.tokens["beta"]) as beta:
        alpha.heartbeat({"role": "dispatcher", "running": 1, "limit": 4, "cpu_percent": 12.0,
                         "credential_status": "in sync"})
        beta.heartbeat({"role": "worker", "problems": ["cannot reach the <broker>"]})
        [activity] = alpha.claim_activity_runs(epoch=1, wait=0)
        alpha.plan_shards(activity["id"], epoch=1, shards=[{"id": f"{activity['id']}-0", "index": 0}])
        place(alpha, f"{activity['id']}-0", "beta")
        beta.report_shard(f"{activity['id']}-0", {"attempt": 1, "status": "running",
                                                  "wait_reason": "alpha was full"})
    page = httpx.get(cloud.url + "/", headers={"Authorization": f"Bearer {cloud.process.api_token}"})
    assert page.status_code == 200
    html = page.text
    assert 'http-equiv="refresh"' in html
    assert site.gateway in html and "Limited" in html
    assert "alpha" in html and "dispatcher" in html and "1 / 4" in html
    assert "<td>none</td>" in html  # the credential status, derived by the cloud (no credential yet)
    assert "cannot reach the &lt;broker&gt;" in html and "<broker>" not in html
    assert "beta: Limited (cannot reach the &lt;broker&gt;)" in html  # the gateway's reasons
    assert run["id"][:12] in html and "alpha was full" in html
