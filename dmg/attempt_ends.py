"""How an attempt of a shard ended: the words the dispatcher, the workers and the cloud share.

An attempt ends when its worker reports ``succeeded`` or ``failed`` (``cancelled``
when it failed because its run was cancelled), or when the site gives the shard a
new attempt: :func:`dmg.site.attempts.requeue` (or a rebalance move, a re-issue) records
*why* in the shard's hash, and the dispatcher passes it on in the ``placed`` report
of the next attempt (``previous_ended``, ``previous_ended_at``). An attempt replaced
for a reason nobody told the cloud ended ``fenced``.
"""

from __future__ import annotations

SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
#: The error a shard of a cancelled activity run is reported ``failed`` with (the cloud reads
#: it as ``cancelled``): it did not start, or stopped between chunks.
CANCELLED_REASON = "the run was cancelled"
#: Replaced by a newer attempt, for a reason the cloud was not told.
FENCED = "fenced"
#: The process that ran it died on a live node (:class:`dispatcher.recovery.OrphanWatch`).
WORKER_DIED = "worker died"
#: Its node stopped beating (:func:`dispatcher.recovery.requeue_offline`).
NODE_OFFLINE = "node offline"
#: Its node's process started again and handed it back (:func:`workers.agent.reclaim.hand_back`).
NODE_RESTARTED = "node restarted"
#: ``dmg node remove`` took it off its node.
NODE_REMOVED = "node removed"
#: ``dmg node drain`` took it off its node before it started.
NODE_DRAINED = "node drained"
#: Moved, not started, to a node with a free slot (:mod:`dispatcher.rebalance`).
MOVED = "moved"
#: A new dispatcher could not know whether its message went out and sent a new one.
REISSUED = "re-issued by a new dispatcher"
#: Its message could not be sent.
NOT_SENT = "not sent"

#: Every way an attempt may be replaced (what a ``placed`` report may say of the previous one).
REPLACED = (FENCED, WORKER_DIED, NODE_OFFLINE, NODE_RESTARTED, NODE_REMOVED, NODE_DRAINED, MOVED,
            REISSUED, NOT_SENT)
#: Every ending.
ENDINGS = (SUCCEEDED, FAILED, CANCELLED, *REPLACED)
