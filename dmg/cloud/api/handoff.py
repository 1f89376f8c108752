"""Claim at creation: a new run's activity runs handed to a claim long-poll waiting here.

A claim long-poll that found nothing waits (:mod:`.notify`). While it waits it is listed
here (:meth:`ClaimHandoff.waiting`); a run created in this process takes the gateway's
listed long-polls (:meth:`ClaimHandoff.take`) and claims for the first that may claim
(the gateway's cloud-lease holder) in the run's own transaction, with every rule of a
claim (:meth:`dmg.cloud.service.CloudService.start_run`). After the commit each taken
long-poll is handed its answer: the claim's (``activity_runs`` and ``cancelled``, as its
own claim answers), or None (nothing claimed for it; it claims as usual). The claim's
transaction and its thread hop after the wake-up are saved from the submit -> start path.

Everything else takes the usual path: a long-poll of another cloud process (PostgreSQL
NOTIFY), one not waiting at that moment (its claim runs, its answer is on its way), a
refused claim (another node's lease, a removed node).

The creation's own response waits (at most :data:`ANSWER_FIRST` s) until the long-poll it
handed runs has sent its answer (:func:`answers_first`): both are written by the one event
loop, and the creation's response (the run's JSON, the middleware) would otherwise go first
while the long-poll resumes (its wake-up and its client check take several loop turns), on
the submit -> start path.

A taken long-poll whose client is gone when its answer comes frees its cloud lease, as a
disconnected long-poll does after any wake-up: the next claim takes a newer cloud epoch,
which takes back the activity runs claimed for it and never planned
(:func:`dmg.cloud.service.dispatch.claim`). An answer lost on its way is lost as a
claim's answer is.

Waiting and taking are thread-safe (the run is created on a worker thread); a long-poll
waits on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from dmg.cloud.service import NodeIdentity

#: Seconds a run's creation waits, at most, for the long-poll it handed runs to answer first.
ANSWER_FIRST = 0.05


class WaitingClaim:
    """One waiting claim long-poll: who claims (``node``, site ``epoch``, ``limit``) and
    where its answer goes (:meth:`hand`, from any thread)."""

    def __init__(self, node: NodeIdentity, *, epoch: int, limit: int, wake: Callable[[], None]) -> None:
        self.node = node
        self.epoch = epoch
        self.limit = limit
        self.taken = False
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self._answer: asyncio.Future[dict[str, Any] | None] = self._loop.create_future()
        self._responding = asyncio.Event()

    def hand(self, answer: dict[str, Any] | None) -> None:
        """Give the taken long-poll its answer (None: nothing was claimed for it), once its
        run's transaction ended; called exactly once for every taken one."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server stops
            self._loop.call_soon_threadsafe(self._deliver, answer)

    def _deliver(self, answer: dict[str, Any] | None) -> None:
        if not self._answer.done():
            self._answer.set_result(answer)
        if answer is not None:
            self._wake()  # it waits on the gateway's notices

    def responding(self) -> None:
        """The long-poll is sending its answer, or is done with what it was handed (on the
        event loop): a creation waiting in :meth:`answered` goes on."""
        self._responding.set()

    async def answered(self, timeout: float) -> None:
        """Return once the long-poll, handed runs, has called :meth:`responding`, or after
        ``timeout`` s; at once when it was handed nothing."""
        if not self._answer.done() or self._answer.result() is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._responding.wait(), timeout)

    async def answer(self) -> dict[str, Any] | None:
        """What a run's creation handed it, once it has stopped waiting: None when it was
        not taken, or nothing was claimed for it."""
        if not self.taken:
            return None
        return await self._answer


class ClaimHandoff:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, list[WaitingClaim]] = {}

    @contextlib.contextmanager
    def waiting(self, node: NodeIdentity, *, epoch: int, limit: int,
                wake: Callable[[], None]) -> Iterator[WaitingClaim]:
        """List a long-poll for the time of its wait (on the event loop); ``wake`` wakes
        its wait when it is handed runs."""
        waiting = WaitingClaim(node, epoch=epoch, limit=limit, wake=wake)
        with self._lock:
            self._waiting.setdefault(node.gateway_id, []).append(waiting)
        try:
            yield waiting
        finally:
            with self._lock:
                listed = self._waiting.get(node.gateway_id, [])
                if waiting in listed:
                    listed.remove(waiting)
                    if not listed:
                        del self._waiting[node.gateway_id]

    def take(self, gateway_id: int) -> list[WaitingClaim]:
        """Unlist and take the gateway's waiting long-polls (oldest first): each must be
        handed an answer (:meth:`WaitingClaim.hand`)."""
        with self._lock:
            taken = self._waiting.pop(gateway_id, [])
            for waiting in taken:
                waiting.taken = True
        return taken


async def answers_first(taken: list[WaitingClaim], *, timeout: float = ANSWER_FIRST) -> None:
    """Let the long-polls among ``taken`` that were handed runs answer before the caller
    (a run's creation) sends its own response; at most ``timeout`` s in all."""
    deadline = asyncio.get_running_loop().time() + timeout
    for waiting in taken:
        await waiting.answered(max(deadline - asyncio.get_running_loop().time(), 0.0))
