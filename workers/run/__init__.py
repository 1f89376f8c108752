"""Running one attempt of one shard: plain Python, no Celery, no node agent.

:mod:`workers.run.attempt` is the lifecycle every attempt goes through (delivery,
worker deaths, running report, cancel, leftovers, final report, finished);
:mod:`workers.run.shard` runs a copy shard with it (the entry point, ``run_shard``) and
:mod:`workers.run.part` a part of a very large object. Around them: delivery
de-duplication (:mod:`workers.run.delivery`), staging leftovers
(:mod:`workers.run.leftovers`), reporting (:mod:`workers.run.reporter`,
:mod:`workers.run.outbox`) and progress (:mod:`workers.run.progress`).

Imports ``dmg`` and ``settings`` only: never :mod:`workers.agent` nor the Celery app.
"""
