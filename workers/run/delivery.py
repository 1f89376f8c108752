"""Which process of this node runs a shard attempt, and whether it still lives.

A task message can reach a node's worker more than once for the same attempt:

- the pool process running it died (OOM, segfault): Celery requeues the message
  (``acks_late`` + ``reject_on_worker_lost``) and the shard must run again here;
- the shard outlived the broker's visibility timeout: Redis hands the message out
  again while the first execution still runs, and it must not run twice.

:func:`begin_delivery` tells the two apart with the runner token the first
execution left in the shard hash (:func:`dmg.site.attempts.start_run`): a token whose
process is still alive (same pid, same start time) makes this delivery a
``duplicate`` that does nothing; a dead one lets the attempt start again and
counts one more delivery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psutil

from dmg.site.attempts import RunStart, StartCall, runner_pid, runner_token
from dmg.site.state import SiteState

_mine: tuple[int, str] | None = None  # (pid, token): a forked child has a pid of its own


def my_runner() -> str:
    """The runner token of this process (read from /proc once per process)."""
    global _mine
    pid = os.getpid()
    if _mine is None or _mine[0] != pid:
        _mine = (pid, runner_token(pid, psutil.Process(pid).create_time()))
    return _mine[1]


def runner_alive(token: str) -> bool:
    """True while the process named by ``token`` runs on this machine (not a reused pid)."""
    pid = runner_pid(token)
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        return runner_token(pid, proc.create_time()) == token and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def activity_run_of(shard_id: str) -> str:
    """The activity run a shard id names (:func:`dmg.ids.shard_id`: ``<run>-<index>``); ""
    for an id of another form. A guess the caller checks against the shard's spec."""
    head, dash, index = shard_id.rpartition("-")
    return head if dash and head and index.isdigit() else ""


@dataclass
class NextStart:
    """The start of the next shard a packed message carries, taken in the round trip that
    ends the shard before it (:func:`dmg.site.attempts.finish_run`'s ``then_start``).
    ``answer``: the start script's answer once taken (None: not taken; the shard starts
    as usual)."""

    shard_id: str
    attempt: int
    call: StartCall
    answer: Any = None


def next_start(state: SiteState, shard_id: str, attempt: int, node: str, *,
               epoch: int | None = None) -> NextStart:
    """The start :func:`begin_delivery` would take for a carried ``(shard_id, attempt)``, to be
    taken with the end of the shard before it."""
    call = state.start_call(shard_id, attempt, node, runner=my_runner(), epoch=epoch,
                            activity_run_id=activity_run_of(shard_id), carried=True)
    return NextStart(shard_id, attempt, call)


def begin_delivery(state: SiteState, shard_id: str, attempt: int, node: str, *,
                   epoch: int | None = None, carried: bool = False,
                   started: NextStart | None = None) -> RunStart:
    """Start ``attempt`` of ``shard_id`` in this process, after the site's identity check, in
    one round trip (:meth:`dmg.site.state.SiteState.begin_run`: outcome, deliveries, the
    stored spec, whether the run of :func:`activity_run_of` is cancelled). Raises
    ForeignRedis (another gateway's Redis) and BrokerError. ``carried``: the message carries
    other shards too (:mod:`dispatcher.packing`). ``started``: this shard's start as the end
    of the shard before it took it (:func:`next_start`); its answer is used when there is one
    (no round trip for a first look)."""
    answered = None
    if started is not None and (started.shard_id, started.attempt) == (shard_id, attempt) and carried:
        answered = started.answer
    return state.begin_run(shard_id, attempt, node, runner=my_runner(), alive=runner_alive, epoch=epoch,
                           activity_run_id=activity_run_of(shard_id), carried=carried, answered=answered)
