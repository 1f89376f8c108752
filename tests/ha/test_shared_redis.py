"""Two gateways and one Redis (issue 8, item 4).

- Given two gateways of two clouds, ``alpha`` and ``beta``, each with nodes ``node1``
  and ``node2``, deliberately sharing one Redis database, when both copy at once,
  then both runs succeed byte for byte, every key in that database is under one
  gateway's prefix (Celery's queues, bindings and results included), and a Celery
  broadcast of one gateway reaches only its own workers.
- Given a running site of gateway ``site`` and a node of *another* cloud's gateway
  ``site`` (the same namespace: the misconfiguration) pointed at its Redis, the node
  refuses with one line naming the gateway that owns that Redis, exits non-zero, and
  writes no heartbeat and takes no lease there.
- When the running site's Redis is swapped under it (another site's Redis on the
  same port), its nodes stop taking work and say why; they write no heartbeat there.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery

from dmg.cli.demo import KIB
from dmg.embedded.faults import SiteUnderTest
from dmg.embedded.redis import EmbeddedRedis
from dmg.procs import free_port
from dmg.site.identity import SiteIdentity
from dmg.site.state import SiteState
from settings import process_environ, settings_environ
from settings.celery import celery_config
from settings.redistls import broker_password
from tests.ha.nodekit import dispatcher_of, site_state
from tests.ha.sitekit import (
    assert_copied_exactly,
    ha_settings,
    require_redis,
    running_site,
    throttled_copy,
    wait_for,
)
from workers.names import COPY_SHARD, node_queue

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def celery_of(site: SiteUnderTest) -> Iterator[Celery]:
    app = Celery("test-remote-control", set_as_current=False)
    app.conf.update(celery_config(site.settings.replace(gateway=site.gateway)))
    try:
        yield app
    finally:
        app.close()


def test_two_gateways_share_one_redis_without_mixing(tmp_path: Path) -> None:
    require_redis()
    alpha = SiteUnderTest(ha_settings(tmp_path / "alpha"), nodes=2, gateway="alpha", node_concurrency=2,
                          flower=False, startup_timeout=60)
    with running_site(alpha):
        beta = SiteUnderTest(ha_settings(tmp_path / "beta", redis_url=alpha.settings.redis_url,
                                         redis_password=broker_password(alpha.settings) or ""), nodes=2,
                             gateway="beta", node_concurrency=2, flower=False, startup_timeout=60,
                             external_broker=True)
        with running_site(beta), alpha.client() as a_client, beta.client() as b_client:
            a_copy = throttled_copy(a_client, alpha, tmp_path / "a", files=16, bandwidth=96 * KIB)
            b_copy = throttled_copy(b_client, beta, tmp_path / "b", files=16, bandwidth=96 * KIB)
            a_run = a_client.run_pipeline(a_copy.pipeline)["id"]
            b_run = b_client.run_pipeline(b_copy.pipeline)["id"]
            for client, run_id in ((a_client, a_run), (b_client, b_run)):
                wait_for(lambda c=client, r=run_id: c.run(r)["status"] in ("Succeeded", "Failed"),
                         timeout=120, what=f"run {run_id} to end")
            assert_copied_exactly(a_client, a_run, a_copy)
            assert_copied_exactly(b_client, b_run, b_copy)

            broker = redis_lib.Redis.from_url(alpha.broker_url())
            try:
                keys = {k.decode() for k in broker.scan_iter(count=1000)}
            finally:
                broker.close()
            assert any(k.startswith("dmg:alpha:celery:") for k in keys), sorted(keys)
            assert any(k.startswith("dmg:beta:celery:") for k in keys), sorted(keys)
            shared = sorted(k for k in keys if not k.startswith(("dmg:alpha:", "dmg:beta:")))
            assert shared == [], shared

            for site in (alpha, beta):  # remote control (dmg scale, Flower) sees its own workers only
                with celery_of(site) as app:
                    replies = app.control.ping(timeout=2.0) or []
                hostnames = {name for reply in replies for name in reply}
                assert hostnames == {f"node1@{site.gateway}", f"node2@{site.gateway}"}, replies


def dmg(args: list[str], env: dict[str, str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dmg.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_a_node_of_another_gateway_refuses_a_redis_and_a_swapped_redis_stops_a_site(tmp_path: Path) -> None:
    require_redis()
    site = SiteUnderTest(ha_settings(tmp_path / "a"), nodes=2, flower=False, startup_timeout=60)
    other = SiteUnderTest(ha_settings(tmp_path / "b"), nodes=1, flower=False, startup_timeout=60)
    with running_site(site), running_site(other), site_state(site) as state:
        assert site.gateway == other.gateway == "site"  # two clouds, one gateway name
        stranger = {**process_environ(settings_environ(other.settings)),
                    "DMG_REDIS_URL": site.settings.redis_url, "DMG_CLOUD_URL": other.settings.cloud_url,
                    "DMG_REDIS_PASSWORD": broker_password(site.settings) or ""}
        registered = dmg(["node", "register", "--key", other.gateway_keys["key1"], "--name", "node3"],
                         stranger, timeout=60)
        assert registered.returncode == 0, registered.stderr
        leader = wait_for(lambda: dispatcher_of(state), timeout=20, what="a dispatcher")

        started = time.monotonic()
        refused = dmg(["node", "start", "--name", "node3"], stranger, timeout=60)
        assert refused.returncode != 0
        assert time.monotonic() - started < 30
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
        owner = state.redis.hget(state.keys.identity, "json")
        assert owner is not None
        owner_text = SiteIdentity.from_json(owner).describe()
        assert errors[0].startswith(f"error: this Redis ({site.settings.redis_url}) belongs to {owner_text}; "
                                    "this node is of gateway 'site' (id "), errors[0]
        assert other.settings.cloud_url in errors[0] and owner_text not in errors[0].split(";")[1], errors[0]
        assert b"node3" not in state.redis.smembers(state.keys.nodes)
        assert not state.redis.exists(state.keys.heartbeat("node3"))
        assert dispatcher_of(state) == leader

        # Another site's Redis, with its data, takes the port of this site's Redis.
        elsewhere = EmbeddedRedis(tmp_path / "elsewhere", free_port()).start()
        client = redis_lib.Redis.from_url(elsewhere.url)
        foreign = SiteIdentity("site", "9-0123456789ab", "http://elsewhere:8050")
        SiteState(client, "site", identity=foreign).claim_identity()
        client.close()
        with celery_of(site) as app:  # a task of that site's node1 waits there
            app.conf.broker_url = app.conf.result_backend = elsewhere.url
            app.send_task(COPY_SHARD, args=["theirs-00000", 1], queue=node_queue("node1"), task_id="theirs:1")
        with contextlib.closing(redis_lib.Redis.from_url(elsewhere.url)) as check:
            assert check.llen("dmg:site:celery:node.node1") == 1
        elsewhere.stop()  # its AOF holds the stamp
        port = int(site.settings.redis_url.rsplit(":", 1)[1].split("/")[0])
        site.stop_redis()
        # with this site's password: the nodes get in, and find the other site's stamp
        swapped = EmbeddedRedis(tmp_path / "elsewhere", port,
                                password=broker_password(site.settings) or "").start()
        try:
            client = redis_lib.Redis.from_url(swapped.client_url())
            assert client.hget("dmg:site:identity", "token") == b"9-0123456789ab"
            wait_for(lambda: all(not site.node_pids(n) for n in site.node_names), timeout=30,
                     what="every node of the site stopped")
            for name in site.node_names:
                log = (site.log_dir / f"{name}.log").read_text()
                assert "belongs to gateway 'site' (id 9-0123456789ab" in log, log[-2000:]
            assert [k for k in client.scan_iter(match="dmg:site:hb:*")] == []
            assert not client.exists("dmg:site:lease")
            assert client.hget("dmg:site:identity", "token") == b"9-0123456789ab"
            # Their task did not run: a worker that took it before its node stopped handed it back
            # (Reject, requeue) or was stopped while it waited; neither is a success.
            meta = client.get("dmg:site:celery:celery-task-meta-theirs:1")
            assert meta is None or json.loads(meta)["status"] != "SUCCESS", meta
            client.close()
        finally:
            swapped.stop()
