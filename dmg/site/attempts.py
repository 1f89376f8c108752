"""The life of a shard attempt in the site state, beyond placement: start, hand back, re-issue.

Each operation is one Redis script, so it is atomic against every other writer
(the dispatcher, the node that runs the shard, a node that restarts, the CLI):

- :func:`start_run`: a worker takes a delivery of ``(shard, attempt)``. It starts
  only if the attempt is still current, was not dispatched by a superseded epoch,
  is not finished (a late redelivery of a finished attempt is a no-op) and no live
  process of this node already runs it (a broker redelivery of a running shard,
  DESIGN.md's visibility-timeout trap). Each start counts a *delivery*; every
  delivery after the first means the process that ran the attempt before died.
  :func:`begin_run` is the same step with the site's identity check first and the
  shard's spec handed back: a worker's whole start is one round trip.
- :func:`finish_run`: the attempt's end on its node in one step: its final report
  queued in the node's outbox, the bytes it moved counted, marked finished, and its
  task's result stored; for a packed message's shard, with the start of the next shard
  it carries in the same round trip (``FINISH_THEN_START``: the end, then the start,
  each checked as alone).
- :func:`requeue`: take a shard off a node (dead, restarted, drained, removed):
  its attempt is bumped (the old one is fenced off: it can no longer start or
  commit) and it goes to the head of ``pending`` for the dispatcher to place.
  The new attempt is kept *unsent* (``unsent`` in the hash): placement
  (:meth:`dmg.site.state.SiteState.new_attempt`) sends that very number instead of
  bumping again, so attempts are numbered 1, 2, 3 with no gap. Why the old attempt
  ended (:mod:`dmg.attempt_ends`) is kept in ``ended_reason``/``ended_at`` until the
  dispatcher reports the next placement to the cloud.
- :func:`reissue`: a new dispatcher cannot know whether its predecessor's
  message for a queued shard went out; it re-issues the shard on the same node
  with a new attempt, unless the node started it meanwhile.

A *runner* token names the process that runs an attempt: ``<pid>@<create time>``
(:func:`runner_token`); the shard hash keeps it in ``runner``. Liveness is
checked by the caller on the node (:mod:`workers.run.delivery`) or from the pids a
node's worker publishes (:mod:`dispatcher.recovery`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmg.attempt_ends import FENCED
from dmg.ids import staging_id
from dmg.shards.status import (
    OUTCOME_DUPLICATE,
    OUTCOME_STALE,
    STATE_DONE,
    STATE_FAILED,
    STATE_PENDING,
    STATE_QUEUED,
    STATE_RUNNING,
)
from dmg.site import scripts
from dmg.site.shards import ShardRecords

STARTED = "started"
STALE = OUTCOME_STALE
DUPLICATE = OUTCOME_DUPLICATE
#: :func:`begin_run`'s answer on another gateway's Redis (:mod:`dmg.site.identity`).
FOREIGN = "foreign"




#: How often :func:`start_run` re-reads a runner that changed under it before giving up.
_START_TRIES = 8


def runner_token(pid: int, created: float) -> str:
    """The runner token of process ``pid`` started at ``created`` (POSIX seconds)."""
    return f"{pid}@{created:.3f}"


def runner_pid(token: str) -> int | None:
    """The pid in a runner token; None for an empty or foreign token."""
    head = token.split("@", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass(frozen=True)
class RunStart:
    """What :func:`begin_run` answers: the outcome, the deliveries counted, the stored spec
    (JSON text, "" unless started), for :data:`FOREIGN` the owner's identity JSON and,
    when asked with a ``cancel_key``, whether that flag was set as the attempt started
    (None: not asked), and with a ``bandwidth_key`` too, the run's bandwidth limit then
    ("": none set; None: not asked)."""

    outcome: str
    deliveries: int
    spec: str = ""
    owner: str = ""
    cancelled: bool | None = None
    bandwidth: str | None = None


def script_of(client: Any, source: str) -> Any:
    """``client.register_script(source)``, made once per client: redis-py's ``Script`` hashes
    its source when it is made, and a worker starts and ends every shard with one."""
    made: dict[str, Any] = client.__dict__.setdefault("_dmg_scripts", {})
    script = made.get(source)
    if script is None:
        script = made[source] = client.register_script(source)
    return script


def start_run(state: ShardRecords, shard_id: str, attempt: int, node: str, *, runner: str,
              alive: Callable[[str], bool], epoch: int | None = None) -> tuple[str, int]:
    """Try to start ``attempt`` of ``shard_id`` on ``node`` in process ``runner``.

    Returns ``(outcome, deliveries)``: :data:`STARTED` with the number of times this
    attempt has started (1 the first time), :data:`STALE` (fenced, finished, from a
    superseded epoch, or placed elsewhere) or :data:`DUPLICATE` (``alive(token)`` says
    the process that runs it is still there: this delivery must do nothing).
    """
    begun = begin_run(state, shard_id, attempt, node, runner=runner, alive=alive, epoch=epoch)
    return begun.outcome, begun.deliveries


#: The keys and the arguments of a first look of ``START_RUN`` (:func:`start_call`).
StartCall = tuple[list[str], list[Any]]


def start_call(state: ShardRecords, shard_id: str, attempt: int, node: str, *, runner: str,
               epoch: int | None = None, identity: tuple[str, str] = ("", ""), cancel_key: str = "",
               bandwidth_key: str = "", carried: bool = False, seen: str = "",
               seen_alive: bool = False) -> StartCall:
    """The keys and arguments of ``START_RUN`` for :func:`begin_run`'s arguments, with the
    runner the caller saw (``seen``: "" on a first look) and whether it lives."""
    optional = [cancel_key, *([bandwidth_key] if bandwidth_key else [])] if cancel_key else []
    keys = [state.keys.shard(shard_id), state.keys.queued(node), state.keys.running(node),
            state.keys.started(node), state.keys.identity, *optional]
    args: list[Any] = [attempt, shard_id, node, STATE_RUNNING, runner, seen, "1" if seen_alive else "0",
                       "" if epoch is None else epoch, staging_id(shard_id, attempt), *identity,
                       state.keys.carried(node) if carried else ""]
    return keys, args


def begin_run(state: ShardRecords, shard_id: str, attempt: int, node: str, *, runner: str,
              alive: Callable[[str], bool], epoch: int | None = None,
              identity: tuple[str, str] = ("", ""), cancel_key: str = "",
              bandwidth_key: str = "", carried: bool = False, answered: Any = None) -> RunStart:
    """:func:`start_run` that also checks the site's identity stamp first (``identity``:
    our token and JSON; ``("", "")``: not checked) and hands back the shard's stored spec,
    all in one round trip for a first delivery. Outcome :data:`FOREIGN` (with the owner's
    identity JSON): the namespace is another gateway's, nothing was written. With
    ``cancel_key`` (a run's cancel flag, :meth:`dmg.site.keys.SiteKeys.cancelled`) a
    started answer says whether it is set (:attr:`RunStart.cancelled`), and with a
    ``bandwidth_key`` too (a run's :meth:`~dmg.site.keys.SiteKeys.bandwidth`) the limit set
    there (:attr:`RunStart.bandwidth`). ``carried``: the delivery is a packed message's
    (:mod:`dispatcher.packing`): a start takes the shard out of the node's carried set too.
    ``answered``: the answer of the first look, taken already with the same arguments in an
    earlier round trip (:func:`finish_run`'s ``then_start``); None: none taken."""
    script = script_of(state.redis, scripts.START_RUN)
    shard_key = state.keys.shard(shard_id)
    for look in range(_START_TRIES + 1):
        # A first delivery finds no runner (placement clears it): try that first, without
        # reading it; the script answers "retry" when a runner is there after all.
        seen = "" if look == 0 else _text(state.redis.hget(shard_key, "runner"))
        seen_alive = bool(seen) and seen != runner and alive(seen)
        if look == 0 and answered is not None:
            answer = answered
        else:
            keys, args = start_call(state, shard_id, attempt, node, runner=runner, epoch=epoch,
                                    identity=identity, cancel_key=cancel_key, bandwidth_key=bandwidth_key,
                                    carried=carried, seen=seen, seen_alive=seen_alive)
            answer = script(keys=keys, args=args)
        outcome = _text(answer[0])
        if outcome == FOREIGN:
            return RunStart(FOREIGN, 0, owner=_text(answer[2]))
        if outcome != "retry":
            cancelled = bool(int(answer[3])) if cancel_key and len(answer) > 3 else None
            limit = _text(answer[4]) if bandwidth_key and len(answer) > 4 else None
            return RunStart(outcome, int(answer[1]), spec=_text(answer[2]) if len(answer) > 2 else "",
                            cancelled=cancelled, bandwidth=limit)
    return RunStart(DUPLICATE, 0)  # the runner keeps changing: other deliveries are racing for it


#: A task result stored in an attempt's last step (:func:`finish_run`): its key, its value,
#: seconds to keep it (0: forever).
TaskResult = tuple[str, str, int]


def finish_run(state: ShardRecords, shard_id: str, attempt: int, node: str, *, ok: bool,
               outbox: tuple[str, str, str] | None = None, moved: int = 0,
               result: TaskResult | None = None, then_start: StartCall | None = None) -> Any:
    """End ``attempt`` of ``shard_id`` on ``node`` in one step (``FINISH_RUN``): queue its final
    report (``outbox``: the outbox list, its wake-up list, the entry's JSON; None: none),
    count the ``moved`` bytes (read and written) to the node, mark it finished
    (:meth:`~dmg.site.shards.ShardRecords.mark_finished`'s rule), wake the dispatcher's
    placement loop and store the task's ``result`` (None: none) unless a SUCCESS is stored
    there (``STORE_RESULT``). All or nothing; raises BrokerError (then nothing may have
    happened, or all of it: a queued report is idempotent at the cloud).

    ``then_start`` (:func:`start_call`'s first look of another shard, the next one a packed
    message carries): that start is taken right after the end, in the same round trip
    (``FINISH_THEN_START``), and its answer returned for :func:`begin_run`'s ``answered``;
    None without it."""
    outbox_key, wake_key, entry = outbox if outbox is not None else (state.keys.outbox(node),
                                                                       state.keys.outbox_wake(node), "")
    result_keys, result_args = ([result[0]], [result[1], result[2]]) if result is not None else ([], [])
    keys = [state.keys.shard(shard_id), state.keys.queued(node), state.keys.running(node),
            state.keys.started(node), outbox_key, wake_key, state.keys.moved(node), state.keys.wake,
            *result_keys]
    args: list[Any] = [attempt, shard_id, node, STATE_DONE if ok else STATE_FAILED,
                       staging_id(shard_id, attempt), entry, max(0, int(moved)), *result_args]
    if then_start is None:
        script_of(state.redis, scripts.FINISH_RUN)(keys=keys, args=args)
        return None
    start_keys, start_args = then_start
    return script_of(state.redis, scripts.FINISH_THEN_START)(
        keys=[*keys, *start_keys], args=[len(keys), len(args), *args, *start_args])


def _text(raw: object) -> str:
    return (raw.decode() if isinstance(raw, bytes) else str(raw)) if raw else ""


def requeue(state: ShardRecords, shard_id: str, node: str, *, epoch: int | None = None,
            reason: str = FENCED, now: float | None = None) -> int:
    """Take ``shard_id`` off ``node`` and put it first in ``pending`` with a new attempt.

    ``reason`` (one of :data:`dmg.attempt_ends.REPLACED`) says why the old attempt
    ended, at ``now`` (default: the current time). Returns the new attempt, 0 when the
    shard is not queued or running on ``node`` (it moved on: nothing to do), -1 when
    ``epoch`` is given and superseded. Always removes the shard from ``node``'s
    queued/running sets.
    """
    script = state.redis.register_script(scripts.REQUEUE)
    at = time.time() if now is None else now
    return int(script(keys=[state.keys.shard(shard_id)],
                      args=[state.prefix, shard_id, node, "" if epoch is None else epoch, STATE_PENDING,
                            reason, f"{at:.3f}"]))


def reissue(state: ShardRecords, shard_id: str, node: str, *, attempt: int, epoch: int) -> int:
    """Give a shard still queued on ``node`` under ``attempt`` a new attempt on the same node.

    Returns the new attempt (the caller sends its message), 0 when the shard started,
    finished or moved meanwhile, -1 when ``epoch`` is superseded.
    """
    script = state.redis.register_script(scripts.REISSUE)
    return int(script(keys=[state.keys.shard(shard_id)],
                      args=[state.prefix, node, epoch, attempt, STATE_QUEUED, shard_id]))
