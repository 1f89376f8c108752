"""Claim at creation (``dmg/cloud/api/handoff.py``): a run created while its gateway's
dispatcher's claim long-poll waits in this cloud process is claimed for it in the run's
own transaction, with every rule of a claim, and handed to it; anything else takes the
usual path.

In process (a :class:`CloudService` on SQLite) for the service's side, the handoff's
registry on an event loop, and a real server for a long-poll whose client is gone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from dmg.cloud.api.handoff import ClaimHandoff, answers_first
from dmg.cloud.db import Database
from dmg.cloud.schemas import PipelineCreate, StoreCreate
from dmg.cloud.service import CloudService, NodeIdentity
from settings import Settings
from tests.cloud.conftest import Cloud, make_pipeline, make_site, service_site, unique


@dataclass
class Waiting:
    """A waiting long-poll as the service sees it (:class:`dmg.cloud.service.dispatch.WaitingClaim`)."""

    node: NodeIdentity
    epoch: int = 1
    limit: int = 16
    answers: list[dict[str, Any] | None] = field(default_factory=list)

    def hand(self, answer: dict[str, Any] | None) -> None:
        self.answers.append(answer)


@dataclass
class Local:
    svc: CloudService
    d: NodeIdentity
    w: NodeIdentity


@pytest.fixture(params=["sqlite", "postgresql"])
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Local]:
    """A cloud service in this process (SQLite, then PostgreSQL: a real server, an empty
    database each): gateway gw with nodes d and w, pipelines p (one activity) and p3 (three)."""
    if request.param == "postgresql":
        db = Database(request.getfixturevalue("postgres_server").create_database(unique("handoff")))
    else:
        db = Database(f"sqlite:///{tmp_path / 'cloud.db'}")
    db.migrate()
    try:
        svc = CloudService(Settings(data_dir=tmp_path), db)
        d, w = service_site(svc, tmp_path, {"p": 1, "p3": 3})
        yield Local(svc, d, w)
    finally:
        db.dispose()


def test_a_new_run_is_claimed_in_its_own_transaction_for_the_waiting_dispatcher(local: Local) -> None:
    # Given d holds the gateway's cloud lease (it claimed once) and a run of the gateway
    # was cancelled earlier
    svc = local.svc
    assert svc.claim(local.d, epoch=1, limit=16) == []
    cancelled_run = svc.start_run("p")[1]
    svc.cancel_run(cancelled_run["id"])
    # When a run is created while d's long-poll waits
    waiting = Waiting(local.d)
    _gateway_id, run, handed = svc.start_run("p", claim_for=lambda _gateway: [waiting])
    # Then its activity run was claimed for d and handed to it, once, with the cancels a
    # claim's answer carries
    assert handed
    [answer] = waiting.answers
    assert answer is not None
    [claimed] = answer["activity_runs"]
    assert claimed["id"] == run["activity_runs"][0]["id"] and claimed["epoch"] == 1
    assert claimed["source"]["store"]["name"] == "src"
    assert answer["cancelled"] == [cancelled_run["activity_runs"][0]["id"]]
    # and the cloud recorded the claim as a claim records it: in progress, claimed by d,
    # the run's counters moved
    shown = svc.run(run["id"])
    assert shown["status"] == "InProgress" and shown["started_at"] is not None
    assert shown["activity_runs"][0]["status"] == "InProgress"
    assert shown["activity_runs"][0]["claimed_by"] == "d"
    # and nothing is left to claim: it is not claimed twice
    assert svc.claim(local.d, epoch=1, limit=16) == []


def test_a_claim_at_creation_reads_the_runs_pipeline_and_stores_once(local: Local) -> None:
    # Given d holds the cloud lease, and an older run of p3 (another pipeline) is queued
    svc = local.svc
    assert svc.claim(local.d, epoch=1, limit=16) == []
    older = svc.start_run("p3")[1]
    statements: list[tuple[str, str]] = []  # (statement, its parameters)

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        statements.append((" ".join(statement.split()).lower(), str(parameters)))

    # When a run of p is created while d's long-poll waits (the older run is claimed with it)
    waiting = Waiting(local.d)
    event.listen(svc.db.engine, "before_cursor_execute", record)
    try:
        run = svc.start_run("p", claim_for=lambda _gateway: [waiting])[1]
    finally:
        event.remove(svc.db.engine, "before_cursor_execute", record)
    # Then every activity run is sent with its own pipeline's name and its stores
    [answer] = waiting.answers
    assert answer is not None
    sent = {a["run_id"]: a for a in answer["activity_runs"]}
    assert len(answer["activity_runs"]) == 4 and set(sent) == {older["id"], run["id"]}
    assert sent[run["id"]]["pipeline"] == "p" and sent[older["id"]]["pipeline"] == "p3"
    assert {a["source"]["store"]["name"] for a in answer["activity_runs"]} == {"src"}
    assert {a["sink"]["store"]["name"] for a in answer["activity_runs"]} == {"dst"}
    # and the stores were read once in the transaction (by the creation), the pipelines'
    # names once (the older run's alone: the new run's is known)
    assert sum(" from stores " in f" {st} " for st, _ in statements) == 1, statements
    [names] = [params for st, params in statements if " join pipelines " in st]
    assert older["id"] in names and run["id"] not in names, names


def test_a_claim_at_creation_takes_at_most_the_long_polls_limit(local: Local) -> None:
    svc = local.svc
    assert svc.claim(local.d, epoch=1, limit=16) == []
    waiting = Waiting(local.d, limit=2)
    _gateway_id, run, handed = svc.start_run("p3", claim_for=lambda _gateway: [waiting])
    assert handed
    [answer] = waiting.answers
    assert answer is not None and len(answer["activity_runs"]) == 2
    # the third waits for the dispatcher's next claim
    assert [a["id"] for a in svc.claim(local.d, epoch=1, limit=16)] == [run["activity_runs"][2]["id"]]


def test_a_long_poll_of_a_node_without_the_lease_is_handed_nothing(local: Local) -> None:
    # Given d holds the cloud lease and w's long-poll waits (a standby's claim)
    svc = local.svc
    assert svc.claim(local.d, epoch=1, limit=16) == []
    standby, holder = Waiting(local.w, epoch=2), Waiting(local.d)
    # When a run is created, both taken
    _gateway_id, run, handed = svc.start_run("p", claim_for=lambda _gateway: [standby, holder])
    # Then w gets nothing (a claim by w is refused while d's lease runs); d gets the run
    assert handed
    assert standby.answers == [None]
    [answer] = holder.answers
    assert answer is not None
    assert [a["id"] for a in answer["activity_runs"]] == [run["activity_runs"][0]["id"]]


def test_a_refused_claim_leaves_the_run_queued(local: Local) -> None:
    # Given d holds the cloud lease and only w's long-poll waits here
    svc = local.svc
    assert svc.claim(local.d, epoch=1, limit=16) == []
    standby = Waiting(local.w, epoch=2)
    # When a run is created
    _gateway_id, run, handed = svc.start_run("p", claim_for=lambda _gateway: [standby])
    # Then nothing was claimed at creation: the run stays Queued for d's own claim
    assert not handed and standby.answers == [None]
    assert svc.run(run["id"])["activity_runs"][0]["status"] == "Queued"
    assert [a["id"] for a in svc.claim(local.d, epoch=1, limit=16)] == [run["activity_runs"][0]["id"]]


@pytest.mark.parametrize("at_creation", [True, False])
def test_an_activity_run_that_cannot_be_sent_fails_at_its_claim(local: Local, at_creation: bool) -> None:
    # Given a pipeline whose second activity's sink store is gone (removed from the database
    # behind the cloud's back: what a definition saved before dmg.definitions looks like)
    svc = local.svc
    svc.add_store(StoreCreate(name="gone", type="file", location="/nowhere"))
    svc.create_pipeline(PipelineCreate.model_validate({"name": "mixed", "gateway": "gw", "activities": [
        {"name": "ok", "source": {"store": "src", "path": "f"}, "sink": {"store": "dst", "path": "f"}},
        {"name": "bad", "source": {"store": "src", "path": "f"}, "sink": {"store": "gone", "path": "f"}}]}))
    with svc.db.write() as session:
        session.execute(text("DELETE FROM stores WHERE name = 'gone'"))
    assert svc.claim(local.d, epoch=1, limit=16) == []
    # When its run is claimed (in its own transaction, or by the dispatcher's claim)
    if at_creation:
        waiting = Waiting(local.d)
        run = svc.start_run("mixed", claim_for=lambda _gateway: [waiting])[1]
        [answer] = waiting.answers
        assert answer is not None
        claimed = answer["activity_runs"]
    else:
        run = svc.start_run("mixed")[1]
        claimed = svc.claim(local.d, epoch=1, limit=16)
    # Then the good one is sent, the other fails alone, and the counters say so
    assert [a["name"] for a in claimed] == ["ok"]
    shown = svc.run(run["id"])
    statuses = [(a["name"], a["status"]) for a in shown["activity_runs"]]
    assert statuses == [("ok", "InProgress"), ("bad", "Failed")]
    assert "gone" in shown["activity_runs"][1]["error"]
    assert shown["status"] == "InProgress"
    with svc.db.read() as session:
        counted = session.execute(text("SELECT activities_queued, activities_in_progress, activities_failed "
                                       "FROM runs WHERE id = :id"), {"id": run["id"]}).one()
    assert tuple(counted) == (0, 1, 1)
    assert svc.claim(local.d, epoch=1, limit=16) == []


def test_a_run_that_is_not_created_hands_nothing(local: Local) -> None:
    # Given d's long-poll taken by a run's creation that fails at its commit
    svc = local.svc
    assert svc.claim(local.d, epoch=1, limit=16) == []
    waiting = Waiting(local.d)
    with pytest.raises(RuntimeError, match="commit refused"):
        broken_commit(svc, lambda _gateway: [waiting])
    # Then the long-poll is handed nothing, and the claim it makes then finds no run
    assert waiting.answers == [None]
    assert svc.claim(local.d, epoch=1, limit=16) == []


def broken_commit(svc: CloudService, claim_for: Any) -> None:
    """``svc.start_run("p")`` whose transaction fails after the claim (its commit refused)."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    def refuse(_session: Session) -> None:
        raise RuntimeError("commit refused")
    event.listen(Session, "before_commit", refuse)
    try:
        svc.start_run("p", claim_for=claim_for)
    finally:
        event.remove(Session, "before_commit", refuse)


def test_the_registry_hands_answers_to_waiting_long_polls() -> None:
    node = NodeIdentity(node_id=1, node="d", gateway_id=7, gateway="gw")

    async def scenario() -> list[Any]:
        handoff = ClaimHandoff()
        woken = asyncio.Event()
        # a long-poll not waiting any more, never taken: nothing
        with handoff.waiting(node, epoch=1, limit=16, wake=woken.set) as gone:
            pass
        assert handoff.take(7) == []
        untaken = await gone.answer()
        # a waiting long-poll taken and handed runs from another thread: woken, answered
        with handoff.waiting(node, epoch=1, limit=16, wake=woken.set) as waiting:
            [taken] = handoff.take(7)
            assert taken is waiting and handoff.take(7) == []
            threading.Thread(target=taken.hand, args=({"activity_runs": ["a"], "cancelled": []},)).start()
            await asyncio.wait_for(woken.wait(), 5)
        handed = await waiting.answer()
        # a long-poll whose wait ended just as it was taken waits for its answer
        woken.clear()
        with handoff.waiting(node, epoch=1, limit=16, wake=woken.set) as late:
            [taken] = handoff.take(7)
        timer = threading.Timer(0.1, taken.hand, args=(None,))
        timer.start()
        nothing = await asyncio.wait_for(late.answer(), 5)
        return [untaken, handed, nothing, woken.is_set()]
    untaken, handed, nothing, woken = asyncio.run(scenario())
    assert untaken is None
    assert handed == {"activity_runs": ["a"], "cancelled": []}
    assert nothing is None and not woken  # handed nothing: not woken for it


def test_a_runs_creation_answers_after_the_long_poll_it_handed_runs() -> None:
    node = NodeIdentity(node_id=1, node="d", gateway_id=7, gateway="gw")

    async def scenario() -> tuple[list[str], float]:
        handoff = ClaimHandoff()
        order: list[str] = []
        woken = asyncio.Event()

        async def long_poll(waiting: Any) -> None:
            await woken.wait()
            handed = await waiting.answer()
            for _ in range(5):  # its wake-up and client check take several loop turns
                await asyncio.sleep(0)
            order.append(f"long-poll answers {handed['activity_runs']}")
            waiting.responding()

        # Given a waiting long-poll taken by a run's creation and handed its runs
        with handoff.waiting(node, epoch=1, limit=16, wake=woken.set) as waiting:
            [taken] = handoff.take(7)
            poll = asyncio.ensure_future(long_poll(waiting))
            taken.hand({"activity_runs": ["a"], "cancelled": []})
            await asyncio.sleep(0)  # the handing runs on the loop
            # When the creation is about to answer
            await answers_first([taken])
            order.append("creation answers")
        await poll
        # and a long-poll handed nothing, or one that never responds, holds nothing up long
        with handoff.waiting(node, epoch=1, limit=16, wake=lambda: None):
            [nothing] = handoff.take(7)
            nothing.hand(None)
            await asyncio.sleep(0)
            began = time.monotonic()
            await answers_first([nothing], timeout=5)
        with handoff.waiting(node, epoch=1, limit=16, wake=lambda: None):
            [silent] = handoff.take(7)
            silent.hand({"activity_runs": ["b"], "cancelled": []})
            await asyncio.sleep(0)
            await answers_first([silent], timeout=0.05)
        return order, time.monotonic() - began

    order, took = asyncio.run(scenario())
    # Then the long-poll's answer went first
    assert order == ["long-poll answers ['a']", "creation answers"]
    assert took < 1


def test_a_waiting_long_poll_is_handed_its_run(cloud: Cloud, user: Any) -> None:
    # Given the dispatcher's long-poll waiting (after a first empty claim)
    site = make_site(user)
    pipeline = make_pipeline(user, site.gateway)
    with cloud.node(site.tokens["n1"]) as node:
        assert node.claim_activity_runs(epoch=1, wait=0) == []
        result: list[Any] = []
        waiter = threading.Thread(target=lambda: result.append(node.claim_activity_runs(epoch=1, wait=30)))
        waiter.start()
        time.sleep(0.2)  # it waits
        began = time.monotonic()
        run = user.run_pipeline(pipeline)
        waiter.join(timeout=60)
        took = time.monotonic() - began
    # Then it answers with the run at once
    assert [a["id"] for a in result[0]] == [run["activity_runs"][0]["id"]]
    assert took < 5


def test_a_long_poll_gone_when_its_runs_are_handed_loses_none(cloud: Cloud, user: Any) -> None:
    # Given the dispatcher's long-poll waiting, and its client gone (it closed the connection)
    site = make_site(user)
    pipeline = make_pipeline(user, site.gateway)
    token = site.tokens["n1"]
    with cloud.node(token) as node:
        assert node.claim_activity_runs(epoch=1, wait=0) == []
        with pytest.raises(httpx.TimeoutException), httpx.Client(base_url=f"{cloud.url}/api/v1") as raw:
            raw.post("/dispatch/claim", json={"epoch": 1, "wait": 30, "limit": 16},
                     headers={"Authorization": f"Bearer {token}"}, timeout=0.2)
        # When a run is created at once (the server sees the client gone only after a wake-up)
        run = user.run_pipeline(pipeline)
        # Then the dispatcher's next claim gets it: claimed for the gone long-poll or not,
        # it is not stranded (the gone long-poll freed the lease: a newer epoch takes it back)
        deadline = time.monotonic() + 10
        got: list[str] = []
        while not got and time.monotonic() < deadline:
            got = [a["id"] for a in node.claim_activity_runs(epoch=1, wait=1)]
    assert got == [run["activity_runs"][0]["id"]]
