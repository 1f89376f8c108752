"""RunNotifier: a claim long-poll hears every notice, even one sent while it was not waiting."""

from __future__ import annotations

import asyncio
import time

from dmg.cloud.api.notify import RunNotifier


def _waited(notifier: RunNotifier, gateway_id: int, timeout: float) -> float:
    """Seconds one wait took."""
    async def one() -> float:
        began = time.monotonic()
        await notifier.wait(gateway_id, timeout)
        return time.monotonic() - began
    return asyncio.run(one())


def test_a_notice_sent_between_two_waits_wakes_the_next_wait_at_once() -> None:
    # given a long-poll that is not waiting (its claim transaction runs)
    notifier = RunNotifier()
    # when a run is queued meanwhile
    notifier.notify(7)
    # then its next wait returns at once, not after the periodic re-check
    assert _waited(notifier, 7, timeout=2.0) < 0.5
    # and the notice is used up: the wait after it waits again
    assert _waited(notifier, 7, timeout=0.2) >= 0.15


def test_a_notice_of_another_gateway_wakes_nobody() -> None:
    notifier = RunNotifier()
    notifier.notify(1)
    assert _waited(notifier, 2, timeout=0.2) >= 0.15


def test_every_waiting_long_poll_of_the_gateway_is_woken() -> None:
    async def scenario() -> list[float]:
        notifier = RunNotifier()
        began = time.monotonic()

        started: list[int] = []
        both_waiting = asyncio.Event()

        async def wait() -> float:
            started.append(1)
            if len(started) == 2:
                both_waiting.set()
            # nothing yields between here and the wait's registration
            await notifier.wait(3, 5.0)
            return time.monotonic() - began
        waiters = [asyncio.create_task(wait()) for _ in range(2)]
        await both_waiting.wait()
        notifier.notify(3)
        return await asyncio.gather(*waiters)
    assert all(took < 1.0 for took in asyncio.run(scenario()))
