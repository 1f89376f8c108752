"""A dmg node's worker side, in three parts.

- this package: the Celery process — the app (:mod:`workers.app`), the thin tasks
  (:mod:`workers.tasks`), task names and queues (:mod:`workers.names`), the per-process
  context (:mod:`workers.context`) and the consumer / broker-loss glue
  (:mod:`workers.consumer`, :mod:`workers.brokerloss`);
- :mod:`workers.agent`: the node agent (heartbeats, drain, scaling, sizing, store checks);
- :mod:`workers.run`: the running of one shard attempt.
"""
