"""One vocabulary for a shard's status, in the three places it shows.

A shard has a **state** in the site's Redis record (``shard:<id>`` field ``state``),
a **status** the cloud shows (and that nodes report), and each attempt a runner
runs ends with an **outcome**. They are three views of one life, so the words
differ on purpose; this module names each word once, for its meaning, and maps
them onto each other.

=================  ========================  =====================  ===================
Redis ``state``    meaning                   cloud ``status``       runner outcome
=================  ========================  =====================  ===================
``queued``         planned, no node yet      ``planned``            (not run)
                   (attempt 0, ``node`` "")
``pending``        handed back, waiting      ``planned``/last shown (not run)
                   for placement again       until placed again
``queued``         placed on ``node``, not   ``placed``             (not run yet)
                   started
``running``        a runner started it       ``running``            (running)
``done``           the current attempt       ``succeeded``          ``succeeded``
                   succeeded
``failed``         the current attempt       ``failed``             ``failed``,
                   failed (or was cancelled)                        ``cancelled``
(unchanged)        the delivery was stale    (no report)            ``stale``
                   or a second live run      (no report)            ``duplicate``
=================  ========================  =====================  ===================

A planned shard is recorded ``queued`` with no node (the record's first state),
so "queued" alone does not say "placed": :func:`cloud_status` takes both. A
``cancelled`` outcome is reported to the cloud as ``failed`` with the cancel
reason; ``stale`` and ``duplicate`` report nothing (the newer attempt, or the
live run, owns the shard's status) and leave the Redis state as it is.

The constants are plain strings: they are what the JSON and the Lua scripts carry,
so a node of the previous version reads and writes the same words.
"""

from __future__ import annotations

from typing import Final

# -- the Redis record's ``state`` -----------------------------------------------------
STATE_QUEUED: Final = "queued"
STATE_PENDING: Final = "pending"
STATE_RUNNING: Final = "running"
STATE_DONE: Final = "done"
STATE_FAILED: Final = "failed"
#: Every state the Redis record may hold.
STATES: Final = (STATE_QUEUED, STATE_PENDING, STATE_RUNNING, STATE_DONE, STATE_FAILED)
#: The current attempt ended (successfully or not): a later delivery is stale.
STATES_ENDED: Final = (STATE_DONE, STATE_FAILED)

# -- the cloud's ``status`` -----------------------------------------------------------
CLOUD_PLANNED: Final = "planned"
CLOUD_PLACED: Final = "placed"
CLOUD_RUNNING: Final = "running"
CLOUD_SUCCEEDED: Final = "succeeded"
CLOUD_FAILED: Final = "failed"
#: Every status the cloud shows, in the order a shard goes through them.
CLOUD_STATUSES: Final = (CLOUD_PLANNED, CLOUD_PLACED, CLOUD_RUNNING, CLOUD_SUCCEEDED, CLOUD_FAILED)
#: The statuses a node may report (``planned`` is the cloud's own, from the plan).
CLOUD_REPORTED: Final = (CLOUD_PLACED, CLOUD_RUNNING, CLOUD_SUCCEEDED, CLOUD_FAILED)
#: The shard is over on the cloud: it counts as done in a run's progress.
CLOUD_FINISHED: Final = (CLOUD_SUCCEEDED, CLOUD_FAILED)

# -- a runner's outcome ---------------------------------------------------------------
OUTCOME_SUCCEEDED: Final = "succeeded"
OUTCOME_FAILED: Final = "failed"
#: Reported ``failed`` with the cancel reason; not an error of the Celery task.
OUTCOME_CANCELLED: Final = "cancelled"
#: A newer attempt exists (or the shard ended, or the epoch was superseded): nothing done.
OUTCOME_STALE: Final = "stale"
#: A second delivery of an attempt that a live process of the node still runs.
OUTCOME_DUPLICATE: Final = "duplicate"
OUTCOMES: Final = (OUTCOME_SUCCEEDED, OUTCOME_FAILED, OUTCOME_CANCELLED, OUTCOME_STALE, OUTCOME_DUPLICATE)

#: The Redis state each outcome leaves on the shard's record (None: left as it is).
STATE_AFTER_OUTCOME: Final[dict[str, str | None]] = {
    OUTCOME_SUCCEEDED: STATE_DONE,
    OUTCOME_FAILED: STATE_FAILED,
    OUTCOME_CANCELLED: STATE_FAILED,
    OUTCOME_STALE: None,
    OUTCOME_DUPLICATE: None,
}

#: The final status each outcome reports to the cloud (None: no report).
CLOUD_AFTER_OUTCOME: Final[dict[str, str | None]] = {
    OUTCOME_SUCCEEDED: CLOUD_SUCCEEDED,
    OUTCOME_FAILED: CLOUD_FAILED,
    OUTCOME_CANCELLED: CLOUD_FAILED,
    OUTCOME_STALE: None,
    OUTCOME_DUPLICATE: None,
}

_CLOUD_OF_STATE: Final[dict[str, str]] = {
    STATE_PENDING: CLOUD_PLANNED,
    STATE_QUEUED: CLOUD_PLACED,
    STATE_RUNNING: CLOUD_RUNNING,
    STATE_DONE: CLOUD_SUCCEEDED,
    STATE_FAILED: CLOUD_FAILED,
}


def cloud_status(state: str, *, node: str) -> str:
    """What the cloud shows for a shard whose Redis record holds ``state`` and ``node``
    (see the table in the module docstring). Raises ValueError for an unknown state."""
    if state not in _CLOUD_OF_STATE:
        raise ValueError(f"unknown shard state {state!r}; expected one of {', '.join(STATES)}")
    if state == STATE_QUEUED and not node:
        return CLOUD_PLANNED
    return _CLOUD_OF_STATE[state]
