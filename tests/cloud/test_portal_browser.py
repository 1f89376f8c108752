"""The portal in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Given a real two-node site (Redis, the cloud, two nodes with a pool of 2 each), when a
person signs in and opens the gateway page while a slow copy runs, then the node table
fills with live values that change without a reload (htmx swaps them in place); when
they set node1's limit to 4, node1's Celery pool grows to 4 processes (the node applies
it through ``dmg_scale``, as ``dmg scale`` would) and the table shows it; when they
drain node2, the site's drain flag is set and the table shows it Upgrading. On a
failure the test saves a screenshot under its tmp dir and prints the path.

Playwright drives the system chromium (``executable_path``); ``playwright install`` is
never run. Under CI=true a missing chromium fails the test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dmg.embedded.site import EmbeddedSite
from dmg.procs import free_port
from dmg.site.state import SiteState
from settings import Settings
from tests.conftest import require
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
KIB = 1024


def worker_load(site: EmbeddedSite, node: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(site.broker_url())
    try:
        raw = client.get(f"dmg:{site.gateway}:load:{node}")
    finally:
        client.close()
    return json.loads(raw) if raw else {}


def drained(site: EmbeddedSite) -> dict[str, str]:
    import redis

    client = redis.Redis.from_url(site.broker_url())
    try:
        return SiteState(client, site.gateway).drained()
    finally:
        client.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[EmbeddedSite]:
    settings = Settings(data_dir=tmp_path / "data", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        cloud_bind=f"127.0.0.1:{free_port()}", heartbeat_interval=0.5, offline_after=5.0,
                        lease_ttl=3.0, claim_wait=2.0, shard_max_files=1, log_level="WARNING")
    running = EmbeddedSite(settings, nodes=2, node_concurrency=2, flower=False, startup_timeout=60)
    running.start()
    try:
        running.wait_nodes_online(timeout=30)
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    require(Path(CHROMIUM).exists() or shutil.which("chromium") is not None,
            "chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install -e '.[dev]')")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of Drain
            yield page
        finally:
            browser.close()


@contextmanager
def screenshot_on_failure(page: Any, where: Path) -> Iterator[None]:
    """Save what the browser shows when the block fails, and say where."""
    try:
        yield
    except BaseException:
        path = where / "portal-failure.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            print(f"\nscreenshot of the failure: {path}")
        except Exception as exc:  # the browser itself may be what failed
            print(f"\nno screenshot of the failure: {exc}")
        raise


def slow_copy(site: EmbeddedSite, tmp_path: Path) -> str:
    """Six one-file shards of 300 KiB at 100 KiB/s each: the nodes are busy for ~6 s."""
    source, sink = tmp_path / "source", tmp_path / "sink"
    source.mkdir()
    sink.mkdir()
    for i in range(6):
        (source / f"f{i}").write_bytes(bytes([i]) * 300 * KIB)
    with site.client() as client:
        client.add_store({"name": "src", "type": "file", "location": str(source)})
        client.add_store({"name": "dst", "type": "file", "location": str(sink)})
        client.create_pipeline({"name": "slow", "gateway": site.gateway, "activities": [
            {"name": "a", "source": {"store": "src", "path": ""}, "sink": {"store": "dst", "path": ""},
             "options": {"bandwidth": 100 * KIB}}]})
        run: dict[str, Any] = client.run_pipeline("slow")
    return str(run["id"])


def jobs_cell(page: Any, node: str) -> str:
    text: str = page.inner_text(f'#nodes tr[data-node="{node}"] td.jobs')
    return text.strip()


def test_a_person_watches_and_acts_from_the_portal(site: EmbeddedSite, browser_page: Any,
                                                   tmp_path: Path) -> None:
    with screenshot_on_failure(browser_page, tmp_path):
        watch_and_act(site, browser_page, tmp_path)


def watch_and_act(site: EmbeddedSite, page: Any, tmp_path: Path) -> None:
    # Sign in with the API token.
    page.goto(site.portal_url.rstrip("/") + "/")
    assert "sign in" in page.title()
    page.fill('input[name="token"]', site.settings.api_token)
    page.click('button[type="submit"]')
    page.click(f'a[href="/gateways/{site.gateway}"]')
    page.wait_for_selector('#nodes tr[data-node="node1"]')
    page.evaluate("window.__notReloaded = true")

    # The node table fills with live values while a copy runs, without a reload.
    run_id = slow_copy(site, tmp_path)
    seen: set[str] = set()

    def busy() -> bool:
        cells = jobs_cell(page, "node1") + " " + jobs_cell(page, "node2")
        seen.add(cells)
        return any(f"{n} / 2" in cells for n in (1, 2))

    wait_for(busy, timeout=20, what="the table to show running jobs", interval=0.3)
    assert page.evaluate("window.__notReloaded === true")  # swapped in place by htmx
    assert len(seen) >= 2  # the values changed on the page

    # Change node1's limit: its Celery pool grows to 4 processes.
    page.fill('input[aria-label="limit of node1"]', "4")
    page.click('tr[data-node="node1"] form[action$="/limit"] button')
    page.wait_for_selector("#notice")
    wait_for(lambda: len(worker_load(site, "node1").get("pids", [])) == 4, timeout=20,
             what="node1's pool to have 4 processes")
    wait_for(lambda: "/ 4" in jobs_cell(page, "node1"), timeout=15, what="the table to show limit 4",
             interval=0.3)

    # Drain node2: the site's drain flag is set, the table shows it Upgrading.
    page.click('tr[data-node="node2"] form[action$="/drain"] button')
    page.wait_for_selector("#notice")
    wait_for(lambda: drained(site).get("node2") == "drain", timeout=15, what="node2's drain flag")
    wait_for(lambda: "Upgrading" in page.inner_text('#nodes tr[data-node="node2"]'), timeout=15,
             what="the table to show node2 Upgrading", interval=0.3)
    page.reload()
    assert page.is_visible('tr[data-node="node2"] form[action$="/undrain"] button')

    with site.client() as client:
        done = wait_for(lambda: (r := client.run(run_id))["status"] in ("Succeeded", "Failed") and r,
                        timeout=30, what="the run to end", interval=0.3)
    assert done["status"] == "Succeeded", done

    # The run's page links to its activity run: every shard and attempt, every file verified.
    page.goto(f"{site.portal_url.rstrip('/')}/runs/{run_id}")
    page.click("#activities a")
    page.wait_for_selector("#files")
    assert len(page.query_selector_all("#files tr")) == 1 + 6
    shard_rows = page.query_selector_all("table.shards tr")[1:]
    assert len(shard_rows) == 6 and all("node" in row.inner_text() for row in shard_rows)
    attempts = page.query_selector_all("#attempts tr")[1:]
    verified = [row.query_selector_all("td")[10].inner_text() for row in attempts
                if "(current)" in row.inner_text()]
    assert verified == ["1"] * 6  # each one-file shard's checksum checked at the sink
    assert site.dead_children() == []
