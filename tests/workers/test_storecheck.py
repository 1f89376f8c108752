"""Store reachability: the checker, the heartbeat that carries it, the cloud's status
and the dispatcher's placement, against a real cloud and real Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import redis as redis_lib
from celery import Celery

from dispatcher.placement import Placer, node_loads
from dmg.cloud.client import CloudClient
from dmg.connectors import Connector, Entry, StagedWriter, StoreSpec
from dmg.errors import PermissionDenied, Retryable
from dmg.registration import NodeRegistration
from dmg.site.state import SiteState
from settings import Settings
from tests.cloud.conftest import Cloud, launch, make_site, unique
from tests.shardkit import planned_spec
from workers.agent.node_agent import NodeAgent
from workers.agent.storecheck import MAX_REASON, StoreChecker

SECRET = "s3cr3t-never-in-a-heartbeat-4c1"


def file_spec(name: str, location: Path | str) -> dict[str, Any]:
    return {"name": name, "type": "file", "location": str(location), "options": {}}


def test_the_stores_a_node_cannot_reach_come_with_their_reasons(tmp_path: Path) -> None:
    there = tmp_path / "there"
    there.mkdir()
    stores = [file_spec("there", there), file_spec("gone", tmp_path / "gone"),
              {"name": "lake", "type": "s3", "location": "s3://bucket", "options": {}}]
    checker = StoreChecker(Settings(data_dir=tmp_path), fetch_stores=lambda: stores, node="n1")
    assert checker.unreachable() == {}

    found = checker.check_once()

    assert sorted(found) == ["gone", "lake"] and checker.unreachable() == found
    assert found["gone"].startswith(f"store 'gone': {tmp_path / 'gone'} does not exist on this node")
    assert "mount the share at the same path on every node" in found["gone"]
    assert found["lake"].startswith(f"store 'lake' needs a credential, but {tmp_path / 'credentials.toml'}")
    assert checker.checked.is_set()


def test_a_store_that_comes_back_is_reachable_again(tmp_path: Path) -> None:
    later = tmp_path / "later"
    checker = StoreChecker(Settings(data_dir=tmp_path), fetch_stores=lambda: [file_spec("later", later)])
    assert set(checker.check_once()) == {"later"}
    later.mkdir()
    assert checker.check_once() == {}


def test_the_last_store_list_is_checked_while_the_cloud_is_away(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    answers: list[Any] = [[file_spec("root", root)], Retryable("cannot reach the cloud")]

    def fetch() -> list[dict[str, Any]]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    checker = StoreChecker(Settings(data_dir=tmp_path), fetch_stores=fetch)
    assert checker.check_once() == {}
    root.rmdir()
    assert set(checker.check_once()) == {"root"}


class EchoingStore(Connector):
    """A store whose refusal quotes the secret it was given (as a careless SDK might)."""

    type = "s3"

    def __init__(self, spec: StoreSpec, secret: str) -> None:
        super().__init__(spec)
        self.secret = secret

    def check_reachable(self) -> None:
        raise PermissionDenied(f"login with secret {self.secret} refused\n" + "x" * 1000)

    def list(self, prefix: str = "") -> Iterator[Entry]:
        raise NotImplementedError

    def stat(self, path: str) -> Entry:
        raise NotImplementedError

    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        raise NotImplementedError

    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        raise NotImplementedError

    def delete(self, path: str) -> None:
        raise NotImplementedError


def test_a_reason_never_carries_the_secret_and_stays_short(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.toml"
    creds.write_text(f'[stores.lake]\naccess_key_id = "AKIA1"\nsecret_access_key = "{SECRET}"\n')
    os.chmod(creds, 0o600)
    store = {"name": "lake", "type": "s3", "location": "s3://b", "options": {}}
    checker = StoreChecker(Settings(data_dir=tmp_path), fetch_stores=lambda: [store],
                           open_connector=lambda spec: EchoingStore(spec, SECRET))

    reason = checker.check_once()["lake"]

    assert SECRET not in reason and "login with secret *** refused" in reason
    assert len(reason) <= MAX_REASON and "\n" not in reason


def test_a_crashing_check_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    def broken(spec: StoreSpec) -> Connector:
        raise RuntimeError(f"bug holding {SECRET}")

    checker = StoreChecker(Settings(data_dir=tmp_path), fetch_stores=lambda: [file_spec("x", tmp_path)],
                           open_connector=broken)
    assert checker.check_once() == {"x": "the check failed: RuntimeError"}


# -- the whole path: checker -> heartbeat -> cloud status and dispatcher placement ----------
@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    server = launch(tmp_path_factory.mktemp("cloud"))
    try:
        yield server
    finally:
        server.stop()


def test_a_node_that_cannot_see_a_local_path_is_limited_and_gets_no_work_on_it(
        cloud: Cloud, redis_client: redis_lib.Redis, sender: Celery, tmp_path: Path) -> None:
    state = SiteState(redis_client, "gw")
    with cloud.user() as user:
        site = make_site(user, nodes=("n1", "n2"))
        # One machine: the path exists while n1 checks and is gone when n2 does, as if
        # it were a disk of n1's own.
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()
        outbox.mkdir()
        source, sink = unique("in"), unique("out")
        user.add_store(file_spec(source, inbox))
        user.add_store(file_spec(sink, outbox))
        created = user.create_pipeline({"name": unique("pl"), "gateway": site.gateway, "activities": [
            {"name": "copy", "source": {"store": source, "path": ""}, "sink": {"store": sink, "path": ""}}]})
    assert len(created["warnings"]) == 2  # two local paths on a gateway of two nodes

    agents = {}
    for node, limit in (("n1", 1), ("n2", 8)):
        registration = NodeRegistration(cloud.url, site.gateway, node, site.tokens[node])
        client = CloudClient(cloud.url, token=site.tokens[node])
        checker = StoreChecker(Settings(data_dir=tmp_path), fetch_stores=client.node_stores, node=node)
        checker.check_once()
        state.publish_worker_load(node, running=0, limit=limit, pids=[1], ttl=30)
        agents[node] = NodeAgent(Settings(offline_after=30), registration, state=state, cloud=client,
                                 store_health=checker.unreachable, worker_grace=60)
        if node == "n1":
            inbox.rmdir()
    try:
        beats = {node: agent.beat_once() for node, agent in agents.items()}
        with cloud.user() as user:
            shown = {n["name"]: n for n in user.list_nodes(site.gateway)}
    finally:
        for agent in agents.values():
            assert agent.cloud is not None
            agent.cloud.close()  # type: ignore[attr-defined]

    assert beats["n1"]["stores_unreachable"] == [] and beats["n2"]["stores_unreachable"] == [source]
    assert shown["n1"]["status"] == "Online"
    assert shown["n2"]["status"] == "Limited" and shown["n2"]["stores_unreachable"] == [source]
    assert any(r.startswith(f"store {source!r}: {inbox} does not exist on this node")
               for r in shown["n2"]["reasons"])
    assert f"cannot reach store(s) {source}" in shown["n2"]["reasons"]

    loads = {n.name: n for n in node_loads(state)}
    assert loads["n2"].unreachable_stores == {source} and not loads["n1"].unreachable_stores
    shards = [f"ar-{i:05d}" for i in range(2)]
    for shard_id in shards:
        state.save_shard(shard_id, planned_spec(shard_id, source=source, sink=sink))
    state.push_pending(*shards)
    placer = Placer(state=state, sender=sender, cloud=None, holding=lambda: True, max_queued=0)
    placed = placer.place_pending()
    # n2 has more free slots but cannot reach the source: only n1 gets work, the rest waits.
    assert [(p.shard_id, p.node) for p in placed] == [(shards[0], "n1")]
    assert state.pending() == [shards[1]]
    assert source in placer.wait_reason(shards[1])
