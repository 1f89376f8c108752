"""The node agent: what runs beside a node's Celery worker, or inside it for the node's sake.

``dmg node start`` runs :class:`workers.agent.node.NodeRuntime`: the Celery worker as a
child process, the heartbeat thread (:mod:`workers.agent.node_agent`), drain flags
(:mod:`workers.agent.drain`), store checks (:mod:`workers.agent.storecheck`) and, at
start, the hand-back of the node's old work (:mod:`workers.agent.reclaim`). The
concurrent-job limit lives here too: its default from the machine
(:mod:`workers.agent.sizing`), changes without a restart (:mod:`workers.agent.scaling`),
the worker bootsteps that publish the load and autoscale it
(:mod:`workers.agent.loadstep`, :mod:`workers.agent.autoscale`).

May import :mod:`workers.run` (the outbox it flushes, the staging it removes); never
imported by it.
"""
