"""A rolling upgrade of a real three-node site, from one install of dmg to the next.

Given two installs of dmg that differ only in their version (0.1.0 and 0.2.0:
:mod:`tests.ha.installs`) and a three-node site started on 0.1.0, with copies running
one after another; when 0.2.0 is installed and ``dmg gateway upgrade`` rolls the gateway
(:func:`dmg.rolling.roll`); then:

- each node is Upgrading, restarts (same process, re-executed) on 0.2.0 and is back
  before the next one starts; the dispatcher goes last and hands its lease over;
- at every moment at least two nodes take work (the cloud's node list, sampled);
- the gateway version is 0.1.0 while most nodes run it, then 0.2.0; the node on the
  minority version is Limited with both versions in the reason;
- every run succeeded and copied each file exactly once;
- then ``dmg node upgrade`` with nothing newer installed brings the node back on the same
  version and fails in one line; with an install that does not start, ``dmg gateway upgrade``
  stops at the first node, naming it, and leaves the others Online.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmg.cloud.client import CloudClient
from dmg.embedded.faults import SiteUnderTest
from dmg.rolling import roll, roll_order
from dmg.status import WORKING
from tests.cli.conftest import DmgRunner, assert_one_line_error
from tests.ha.installs import NODE_ENVIRON, Install, dmg_tree
from tests.ha.nodekit import dispatcher_of, site_state
from tests.ha.sitekit import (
    Copy,
    assert_copied_exactly,
    figure,
    ha_settings,
    node_rows,
    require_redis,
    running_site,
    throttled_copy,
    wait_for,
)

pytestmark = pytest.mark.integration

OLD, NEW = "0.1.0", "0.2.0"


class Watch:
    """Samples the cloud's node list every 0.2 s from a thread until stopped."""

    def __init__(self, client: CloudClient, site: SiteUnderTest) -> None:
        self.client, self.site = client, site
        self.samples: list[dict[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(node_rows(self.client, self.site))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def takes_work(row: dict[str, Any]) -> bool:
    return row["status"] in WORKING and bool(row["limit"]) and not row["draining"] and not row["upgrade"]


class Runs:
    """Runs copies one after another from a thread until stopped; each its own pipeline."""

    def __init__(self, client: CloudClient, site: SiteUnderTest, root: Path) -> None:
        self.client, self.site, self.root = client, site, root
        self.done: list[tuple[str, Copy]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                name = f"up{len(self.done)}"
                copy = throttled_copy(self.client, self.site, self.root / name, files=16, name=name)
                run_id = self.client.run_pipeline(copy.pipeline)["id"]
                wait_for(lambda rid=run_id: self.client.run(rid)["status"] in ("Succeeded", "Failed"),
                         timeout=60, what=f"run {name} to end")
                self.done.append((run_id, copy))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> Runs:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)


@pytest.fixture
def install(tmp_path: Path) -> Iterator[tuple[Install, Path]]:
    old, new = dmg_tree(tmp_path / "dmg-old", OLD), dmg_tree(tmp_path / "dmg-new", NEW)
    installed = Install.create(tmp_path / "venv", old)
    assert installed.version() == OLD
    yield installed, new


def test_a_rolling_upgrade_keeps_the_gateway_moving_data(tmp_path: Path,
                                                         install: tuple[Install, Path]) -> None:
    require_redis()
    installed, new_tree = install
    site = SiteUnderTest(ha_settings(tmp_path / "site"), nodes=3, node_concurrency=2, flower=False,
                         startup_timeout=60, node_python=installed.python,
                         node_environ={name: NODE_ENVIRON for name in ("node1", "node2", "node3")})
    with running_site(site), site.client() as client:
        assert {r["version"] for r in client.list_nodes(site.gateway)} == {OLD}
        pids = {name: site.pid_of(name) for name in site.node_names}
        with site_state(site) as state:
            first_dispatcher = wait_for(lambda: dispatcher_of(state), timeout=20, what="a dispatcher")
        lines: list[str] = []
        with Runs(client, site, tmp_path / "data") as runs:
            wait_for(lambda: runs.done or runs.error, timeout=30, what="a first run before the upgrade")
            installed.switch(new_tree)
            began = time.monotonic()
            with Watch(client, site) as watch:
                order = roll(client, site.gateway, timeout=60, echo=lines.append)
            figure(site, "rolling_upgrade_3_nodes_s", time.monotonic() - began)
            ran = len(runs.done)
            wait_for(lambda: len(runs.done) > ran or runs.error, timeout=30, what="a run after the upgrade")
        assert runs.error is None, runs.error

        assert order[-1] == first_dispatcher and sorted(order) == site.node_names
        assert [line.rsplit(" ", 1)[-1] for line in lines if "version:" in line] == [OLD, NEW, NEW], lines
        short = [{n: (r["status"], r["version"], r["upgrade"], r["limit"], r["draining"], r["reasons"])
                  for n, r in s.items()} for s in watch.samples if sum(takes_work(r) for r in s.values()) < 2]
        assert not short, short[:3]
        seen = {r["status"] for sample in watch.samples for r in sample.values()}
        assert "Upgrading" in seen, seen
        first = order[0]
        minority = [s[first] for s in watch.samples if s[first]["version"] == NEW
                    and sum(r["version"] == NEW for r in s.values()) == 1 and not s[first]["upgrade"]]
        assert minority and minority[-1]["reasons"] == [f"runs {NEW}, gateway runs {OLD}"], minority[-1:]
        last = order[-1]
        behind = [s[last] for s in watch.samples if sum(r["version"] == NEW for r in s.values()) == 2
                  and not s[last]["upgrade"] and s[last]["status"] != "Offline"]
        assert behind and behind[-1]["reasons"] == [f"runs {OLD}, gateway runs {NEW}"], behind[-1:]

        rows = node_rows(client, site)
        assert {n: (r["status"], r["version"]) for n, r in rows.items()} == {
            n: ("Online", NEW) for n in site.node_names}
        assert client.gateway(site.gateway)["version"] == NEW
        assert {name: site.pid_of(name) for name in site.node_names} == pids  # re-executed in place
        assert site.dead_children() == []
        assert len(runs.done) >= 2
        for run_id, copy in runs.done:
            assert_copied_exactly(client, run_id, copy)

        # the real command, nothing newer installed: node1 restarts, and that is an error
        dmg = DmgRunner(env={"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                             "DMG_API_TOKEN": site.settings.api_token}, cwd=tmp_path)
        listed = dmg("node", "list", "--gateway", site.gateway)
        assert listed.returncode == 0 and f"gateway {site.gateway}: Online, version {NEW}" in listed.stdout
        again = dmg("node", "upgrade", "node1", "--timeout", "40", timeout=60)
        assert_one_line_error(again, contains=f"node node1 restarted but still runs {NEW}")

        # an install that does not start: the first node of the roll does not come back, the roll
        # stops naming it, and the nodes after it are untouched
        broken = dmg_tree(tmp_path / "dmg-broken", "0.3.0")
        (broken / "dmg" / "cli" / "__main__.py").write_text("raise SystemExit('this install is broken')\n")
        installed.switch(broken)
        first, *rest = roll_order(client.list_nodes(site.gateway))
        stopped = dmg("gateway", "upgrade", site.gateway, "--timeout", "8", timeout=60)
        assert_one_line_error(stopped, contains=f"node {first} did not come back within 8 s")
        assert "the roll stopped" in stopped.stderr
        assert site.exit_code(first) == 1
        rows = node_rows(client, site)
        assert all(rows[n]["status"] == "Online" and rows[n]["version"] == NEW for n in rest), rows
