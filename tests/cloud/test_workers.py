"""The cloud served by several worker processes on PostgreSQL (``--workers 2``).

Each test talks to a chosen worker: a keep-alive connection stays with the worker
that accepted it, and the test finds which one that is from the server's side of
the socket (psutil). What one worker does must be seen by the other at once: a
removed node's token, a queued run waking a waiting claim, the debug counters.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.cloud.conftest import Cloud, launch, make_pipeline, make_site, unique

#: Runs whose ends a wait on another worker must see (test_a_run_ending_on_one_worker_...).
RUNS = 4


@pytest.fixture(scope="module")
def two_workers(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    # Two workers each import the whole app: on a 2-core machine at a load of 30 that can
    # take longer than one process's 30 s.
    server = launch(tmp_path_factory.mktemp("workers"), db=postgres_url, cloud_workers=2, cloud_metrics=True,
                    timeout=90)
    try:
        yield server
    finally:
        server.stop()


def _local_ports(server_port: int) -> set[int]:
    # Only this process's connections to the cloud: Linux gives the same ephemeral port to
    # connections to different servers, so a new connection to the cloud may share its
    # local port with one to PostgreSQL opened before (seen once in CI).
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
            if c.raddr and c.raddr.port == server_port}


def _worker_of(cloud: Cloud, local_port: int) -> int | None:
    for child in psutil.Process(cloud.process.pid).children():
        try:
            if any(c.raddr and c.raddr.port == local_port for c in child.net_connections(kind="tcp")):
                return child.pid
        except psutil.NoSuchProcess:
            continue
    return None


def pinned_clients(cloud: Cloud, token: str, *, workers: int = 2) -> dict[int, httpx.Client]:
    """One keep-alive client per worker process: {worker pid: client}."""
    pinned: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + 30
    while len(pinned) < workers:
        assert time.monotonic() < deadline, f"only {len(pinned)} of {workers} workers answered"
        server_port = httpx.URL(cloud.url).port
        assert server_port is not None
        before = _local_ports(server_port)
        client = httpx.Client(base_url=cloud.url + "/api/v1", headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        assert client.get("/health").status_code == 200
        (port,) = _local_ports(server_port) - before
        pid = _worker_of(cloud, port)
        if pid is None or pid in pinned:
            client.close()
            continue
        pinned[pid] = client
    return pinned


def test_a_removed_node_is_refused_at_once_by_every_worker(two_workers: Cloud) -> None:
    """Given a node whose token both workers have cached, when a user removes the node
    through worker A, then every request of that node to worker B (and A) is 401 at once."""
    with two_workers.user() as user:
        site = make_site(user, nodes=("n1",))
    nodes = list(pinned_clients(two_workers, site.tokens["n1"]).values())
    users = pinned_clients(two_workers, two_workers.process.api_token)
    try:
        for _ in range(5):  # both workers now hold the token in their caches
            assert all(n.get("/nodes/stores").status_code == 200 for n in nodes)
        remover = next(iter(users.values()))
        assert remover.delete(f"/gateways/{site.gateway}/nodes/n1").status_code in (200, 204)
        codes = [n.get("/nodes/stores").status_code for _ in range(50) for n in nodes]
        assert set(codes) == {401}, codes
    finally:
        for client in [*nodes, *users.values()]:
            client.close()


def test_a_run_queued_on_one_worker_wakes_a_claim_waiting_on_the_other(two_workers: Cloud) -> None:
    """Given a dispatcher's claim long-poll waiting on worker B, when a user queues a run
    through worker A, the claim returns it within ~0.1 s (not at the 0.5 s re-check)."""
    with two_workers.user() as user:
        site = make_site(user, nodes=("n1",))
        pipeline = make_pipeline(user, site.gateway)
    users = pinned_clients(two_workers, two_workers.process.api_token)
    (a, user_a), (b, _) = list(users.items())[:2]
    dispatcher = pinned_clients(two_workers, site.tokens["n1"])
    node_b = dispatcher[b]
    try:
        assert node_b.post("/dispatch/claim", json={"epoch": 1, "wait": 0}).json()["activity_runs"] == []
        delays = []
        for _ in range(5):
            answer: dict[str, object] = {}

            def claim(answer: dict[str, object] = answer) -> None:
                response = node_b.post("/dispatch/claim", json={"epoch": 1, "wait": 20})
                answer["at"] = time.monotonic()
                answer["body"] = response.json()

            waiter = threading.Thread(target=claim)
            waiter.start()
            time.sleep(0.3)  # the claim is waiting on worker B (no run is queued)
            assert waiter.is_alive()
            response = user_a.post(f"/pipelines/{pipeline}/runs")
            queued = time.monotonic()
            assert response.status_code == 201, response.text
            waiter.join(timeout=20)
            body = answer["body"]
            assert isinstance(body, dict) and len(body["activity_runs"]) == 1, body
            delays.append(float(answer["at"]) - queued)  # type: ignore[arg-type]
        print(f"FIGURE claim_wake_across_workers_ms {[round(d * 1000) for d in delays]} "
              f"(load {psutil.getloadavg()[0]:.1f})")
        # The claim's own transaction is in these figures (0.05-0.3 s on a 2-core machine at
        # a load of 20); test_the_listener_hears_another_process_at_once times the wake alone.
        assert sorted(delays)[2] < 0.3, delays
        assert a != b
    finally:
        for client in [*users.values(), *dispatcher.values()]:
            client.close()


def test_a_run_ending_on_one_worker_answers_a_wait_on_the_other_within_100_ms(two_workers: Cloud) -> None:
    """Given users' run waits (``GET /runs/{id}/wait``) on worker A, past the waits' fast
    checks (runwait.FAST_FOR, then a check every 0.2 s), when the dispatcher's plans that
    end the runs land on worker B, then A answers each within 100 ms (B's NOTIFY at commit).
    The runs end 50 ms apart: were A to see them only at its periodic checks, one of the
    four would wait 150 ms or more whatever the checks' phase."""
    from dmg.cloud.api import runwait

    with two_workers.user() as user:
        site = make_site(user, nodes=("n1",))
        pipeline = make_pipeline(user, site.gateway)
    clients: list[httpx.Client] = []

    def pinned(token: str) -> dict[int, httpx.Client]:
        # Fresh each time it is needed: uvicorn closes a connection idle for 5 s, and the
        # client's next request may then reach the other worker.
        found = pinned_clients(two_workers, token)
        clients.extend(found.values())
        return found

    try:
        users = pinned(two_workers.process.api_token)
        a, b = tuple(users)[:2]
        run_ids = [users[a].post(f"/pipelines/{pipeline}/runs").json()["id"] for _ in range(RUNS)]
        claimed = pinned(site.tokens["n1"])[b].post("/dispatch/claim", json={"epoch": 1, "wait": 0})
        by_run = {activity["run_id"]: activity["id"] for activity in claimed.json()["activity_runs"]}
        assert sorted(by_run) == sorted(run_ids), claimed.text
        waiters_on_a = [pinned(two_workers.process.api_token)[a] for _ in range(RUNS)]
        ended: dict[str, float] = {}
        seen: dict[str, tuple[float, dict[str, Any]]] = {}

        def wait(client: httpx.Client, run_id: str) -> None:
            answer = client.get(f"/runs/{run_id}/wait", params={"status": "InProgress", "timeout": 20})
            seen[run_id] = (time.monotonic(), answer.json())

        waiters = [threading.Thread(target=wait, args=(client, run_id), daemon=True)
                   for client, run_id in zip(waiters_on_a, run_ids, strict=True)]
        for waiter in waiters:
            waiter.start()
        time.sleep(runwait.FAST_FOR + 0.3)
        node_b = pinned(site.tokens["n1"])[b]  # (0.1-0.3 s)
        time.sleep(0.3)
        for run_id in run_ids:  # the plan with no shard ends the run
            answer = node_b.post(f"/activity-runs/{by_run[run_id]}/shards", json={"epoch": 1, "shards": []})
            ended[run_id] = time.monotonic()
            assert answer.status_code == 200, answer.text
            time.sleep(0.05)
        for waiter in waiters:
            waiter.join(20)
        delays = {run_id: seen[run_id][0] - ended[run_id] for run_id in run_ids}
        print(f"FIGURE run_wait_across_workers_ms {sorted(round(d * 1000) for d in delays.values())} "
              f"(load {psutil.getloadavg()[0]:.1f})")
        assert all(answer["status"] == "Succeeded" for _, answer in seen.values()), seen
        assert max(delays.values()) < 0.1, delays
        assert a != b
    finally:
        for client in clients:
            client.close()


def test_debug_counters_are_the_sum_of_the_workers(two_workers: Cloud) -> None:
    """Requests answered by either worker all show in ``/debug/metrics`` (any worker answers)."""
    users = pinned_clients(two_workers, two_workers.process.api_token)

    def count(snapshot: dict[str, Any]) -> int:  # the route's key, with or without its prefix
        return sum(n for key, n in snapshot["requests_by_route"].items() if key.endswith(" /gateways/{name}")
                   and key.startswith("GET "))
    try:
        before = next(iter(users.values())).get("/debug/metrics").json()
        missing = unique("missing")
        for client in users.values():
            for _ in range(7):
                assert client.get(f"/gateways/{missing}").status_code == 404
        for client in users.values():  # whichever answers sums both
            after = client.get("/debug/metrics").json()
            assert count(after) - count(before) == 14
            assert after["statements"] > before["statements"]
            assert after["cpu_seconds"] >= before["cpu_seconds"]
            # each worker froze its start-up objects (dmg.gcfreeze): the fewest of the two
            assert after["gc_frozen"] > 10_000
    finally:
        for client in users.values():
            client.close()


def test_two_workers_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    """``--workers 2`` without PostgreSQL exits 2 with one line naming PostgreSQL."""
    import os

    env = {**os.environ, "DMG_DATA_DIR": str(tmp_path)}
    env.pop("DMG_CLOUD_DB", None)
    for command in ([sys.executable, "-m", "dmg.cloud", "serve", "--bind", "127.0.0.1:0", "--workers", "2"],
                    [str(Path(sys.executable).with_name("dmg")), "cloud", "serve", "--bind", "127.0.0.1:0",
                     "--workers", "2"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, done
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert "Traceback" not in done.stderr, done.stderr
        assert "PostgreSQL" in lines[0] and "workers 2" in lines[0], done.stderr
        assert not list((tmp_path / "cloud").glob("metrics-*"))


def test_zero_workers_are_refused(tmp_path: Path) -> None:
    from dmg.cloud.workers import check_workers
    from dmg.errors import BadInput
    from settings import Settings

    with pytest.raises(BadInput, match="1 to 64"):
        check_workers(Settings(data_dir=tmp_path, cloud_workers=0))
    assert check_workers(Settings(data_dir=tmp_path, cloud_workers=2, cloud_db="postgres://u@h/db")) == 2


def test_the_listener_hears_another_process_at_once(postgres_url: str, tmp_path: Path) -> None:
    """Given this process listening (dmg.cloud.api.listen) on PostgreSQL, a NOTIFY that
    another connection commits wakes the gateway's waiting claims within 0.1 s; a shared
    token cache caches nothing (every token is read from the database)."""
    import asyncio

    import psycopg

    from dmg.cloud.api import listen
    from dmg.cloud.api.notify import RunNotifier
    from dmg.cloud.db import Database
    from dmg.cloud.service import RUNS_CHANNEL, TOKENS_CHANNEL, CloudService, NodeIdentity
    from settings import Settings

    db = Database(postgres_url)
    svc = CloudService(Settings(data_dir=tmp_path), db)
    node = NodeIdentity(node_id=1, node="n1", gateway_id=7, gateway="gw")

    async def scenario() -> float:
        notifier = RunNotifier()
        svc.tokens.put("token", node)
        assert svc.tokens.get("token") is None  # shared: nothing cached
        ready = asyncio.Event()
        task = asyncio.create_task(listen.listen(svc, notifier, ready=ready))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            waiter = asyncio.create_task(notifier.wait(7, 10.0))
            await asyncio.sleep(0.05)
            other = await psycopg.AsyncConnection.connect(db.libpq_url, autocommit=True)
            try:
                sent = time.monotonic()
                await other.execute("SELECT pg_notify(%s, %s)", (RUNS_CHANNEL, "7"))
                await waiter
                woke = time.monotonic() - sent
                await other.execute("SELECT pg_notify(%s, %s)", (TOKENS_CHANNEL, "removed"))
            finally:
                await other.close()
        finally:
            await listen.stop(task)
        svc.tokens.put("token", node)
        assert svc.tokens.get("token") is None
        return woke

    try:
        woke = asyncio.run(scenario())
    finally:
        db.dispose()
    print(f"FIGURE listener_wake_ms {woke * 1000:.1f} (load {psutil.getloadavg()[0]:.1f})")
    assert woke < 0.1
