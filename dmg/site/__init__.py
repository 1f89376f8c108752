"""The site's Redis state, in one package: every key, script and rule of it lives here.

==================  ==================================================================
:mod:`.keys`        every key name of the site (the only place that spells them)
:mod:`.scripts`     the Lua scripts (every one that touches ``shard:<id>``)
:mod:`.state`       :class:`~dmg.site.state.SiteState`, the facade: nodes, drain, backlog
:mod:`.shards`      the shard records: ``shard:<id>`` and the sets that count shards
:mod:`.attempts`    an attempt's life: start, hand back, re-issue
:mod:`.fencing`     how a commit is fenced (read its docstring first)
:mod:`.splits`      split objects (one object written by many nodes)
:mod:`.identity`    the gateway stamp of a Redis database
:mod:`.presence`    which node processes hold a connection
:mod:`.connection`  the Redis connection factory (clients of :mod:`.boundary`)
:mod:`.boundary`    redis-py's errors → :class:`dmg.errors.BrokerError` and subclasses
==================  ==================================================================

Nothing outside this package builds a key of the site; modules outside catch
:class:`dmg.errors.BrokerError`, not redis-py's errors (``tests/site/test_ownership.py``).
Id formats shared with the connectors and the engine are in :mod:`dmg.ids`.
"""
