"""What the dispatcher owes the cloud is not lost while the cloud is away: a failed activity
run is reported once the cloud answers again, and claims pause meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

from celery import Celery

from dispatcher.loop import DispatcherService
from dmg.errors import Retryable
from dmg.site.state import SiteState
from settings import Settings
from tests.dispatcher.memcloud import MemoryCloud
from tests.dispatcher.test_loop import activity_run, services, settings, start
from tests.workers.support import wait_for

__all__ = ["services", "settings"]  # fixtures


class CloudGoingAway(MemoryCloud):
    """A MemoryCloud that answers Retryable to everything while ``away`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.away = threading.Event()
        self.refused: list[str] = []

    def _check(self, what: str) -> None:
        if self.away.is_set():
            self.refused.append(what)
            raise Retryable("cannot reach the cloud")

    def claim_activity_runs(self, *, epoch: int, wait: float, limit: int = 16,
                            again: Collection[str] | None = None) -> list[dict[str, Any]]:
        self._check("claim")
        runs = super().claim_activity_runs(epoch=epoch, wait=wait, limit=limit, again=again)
        if runs and any(r["source"]["path"] == "missing" for r in runs):
            self.away.set()  # the cloud goes away right after handing the run out
        return runs

    def fail_activity_run(self, activity_run_id: str, *, epoch: int, error: str) -> None:
        self._check("fail")
        super().fail_activity_run(activity_run_id, epoch=epoch, error=error)


def test_a_failure_found_while_the_cloud_is_away_reaches_it_later(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService]) -> None:
    cloud = CloudGoingAway()
    run = activity_run(tmp_path)
    run["source"]["path"] = "missing"
    cloud.queue(run)

    start(services, settings, "a", state, cloud, sender)

    wait_for(lambda: "fail" in cloud.refused and "claim" in cloud.refused, what="the cloud refusing")
    assert cloud.failed == {}
    cloud.away.clear()

    error = wait_for(lambda: cloud.failed.get("ar1"), timeout=30, what="the failure delivered")
    assert "missing does not exist in store 'src'" in error


class CloudLosingAnswers(MemoryCloud):
    """A MemoryCloud whose first ``lose`` claims that hand out runs claim them and then
    fail, as when the connection breaks after the cloud committed the claim."""

    def __init__(self, lose: int = 1) -> None:
        super().__init__()
        self.lose = lose
        self.lost: list[str] = []

    def claim_activity_runs(self, *, epoch: int, wait: float, limit: int = 16,
                            again: Collection[str] | None = None) -> list[dict[str, Any]]:
        runs = super().claim_activity_runs(epoch=epoch, wait=wait, limit=limit, again=again)
        if runs and self.lose:
            self.lose -= 1
            self.lost += [str(run["id"]) for run in runs]
            raise Retryable("the cloud's answer was lost: connection reset")
        return runs


def test_runs_claimed_by_a_claim_whose_answer_was_lost_are_planned(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService]) -> None:
    cloud = CloudLosingAnswers()
    cloud.queue(activity_run(tmp_path))

    start(services, settings, "a", state, cloud, sender)

    # The claim after the failed one says what the dispatcher holds (nothing), and the
    # cloud sends ar1 again: it is planned within this lease, not at the next failover.
    wait_for(lambda: "ar1" in cloud.plans, timeout=30, what="ar1 planned")
    assert cloud.lost == ["ar1"]
    assert cloud.agains[0] == []
    assert len(cloud.plans["ar1"]) == 1 and len(set(cloud.claim_epochs)) == 1


class CloudLostTwoAnswers(MemoryCloud):
    """A MemoryCloud whose first claim finds that two claims of ``limit`` runs each were
    committed and their answers lost (the cloud died after each), and fails itself."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[str] = []

    def claim_activity_runs(self, *, epoch: int, wait: float, limit: int = 16,
                            again: Collection[str] | None = None) -> list[dict[str, Any]]:
        if not self.lost:
            with self._cond:
                self._fence(epoch)
                taken, self.queued = self.queued[:2 * limit], self.queued[2 * limit:]
                self.unplanned.setdefault(epoch, {}).update((run["id"], run) for run in taken)
                self.lost = [run["id"] for run in taken]
            raise Retryable("cannot reach the cloud")
        return super().claim_activity_runs(epoch=epoch, wait=wait, limit=limit, again=again)


def test_more_runs_lost_than_one_claim_takes_are_all_sent_again(
        tmp_path: Path, settings: Settings, state: SiteState, sender: Celery,
        services: list[DispatcherService]) -> None:
    # Four runs claimed with lost answers, two at most in a claim: they come again in two
    # answers; the dispatcher asks again until an answer is not full.
    cloud = CloudLostTwoAnswers()
    ids = [f"ar{i}" for i in range(1, 6)]
    for run_id in ids:
        cloud.queue(activity_run(tmp_path, run_id, files=1))

    start(services, settings, "a", state, cloud, sender, claim_limit=2)

    wait_for(lambda: set(cloud.plans) == set(ids), timeout=30, what="every run planned")
    assert cloud.lost == ids[:4]
    # A run sent again after its plan was recorded (the plan on its way to the cloud) has
    # that plan replayed: never a second, different plan.
    assert all(plan == plans[0] for plans in cloud.plans.values() for plan in plans)
