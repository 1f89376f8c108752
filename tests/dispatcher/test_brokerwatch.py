"""BrokerWatch: missing heartbeats are trusted only once the broker has been back for a while."""

from __future__ import annotations

from dispatcher.brokerwatch import BrokerWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_settled_from_the_start() -> None:
    assert BrokerWatch(3.0, clock=Clock()).settled()


def test_an_outage_unsettles_until_the_broker_has_been_back_for_the_threshold() -> None:
    clock = Clock()
    watch = BrokerWatch(3.0, clock=clock)
    watch.failed()
    clock.now += 60
    assert not watch.settled()  # still down: nothing proves a node dead
    watch.reachable()
    clock.now += 2.9
    assert not watch.settled()  # back, but live nodes may not have beaten yet
    watch.reachable()  # more successes do not restart the wait
    clock.now += 0.2
    assert watch.settled()
    assert watch.outages == 1


def test_a_failure_while_settling_starts_the_wait_again() -> None:
    clock = Clock()
    watch = BrokerWatch(3.0, clock=clock)
    watch.failed()
    watch.reachable()
    clock.now += 2
    watch.failed()
    watch.failed()
    watch.reachable()
    clock.now += 2
    assert not watch.settled()
    clock.now += 1
    assert watch.settled()
    assert watch.outages == 2
