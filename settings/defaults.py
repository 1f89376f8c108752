"""Documented defaults for every setting (override with ``DMG_<NAME>``)."""

from __future__ import annotations

#: Where embedded Redis, the SQLite cloud database, node state and logs live.
DATA_DIR = ".dmg"
#: The site broker: Celery broker and results, leases, node registry.
REDIS_URL = "redis://127.0.0.1:6479/0"
#: With a Sentinel group (``DMG_REDIS_URL=sentinel://h1:p1;sentinel://h2:p2/0``): the
#: name the sentinels monitor the primary under (settings.redisurl).
REDIS_MASTER_NAME = "mymaster"
#: Where nodes and the CLI reach the control plane.
CLOUD_URL = "http://127.0.0.1:8050"
CLOUD_BIND = "127.0.0.1:8050"
#: Processes serving the cloud (``DMG_CLOUD_WORKERS``); more than one needs PostgreSQL.
CLOUD_WORKERS = 1
#: Seconds between node heartbeats (Redis and cloud).
HEARTBEAT_INTERVAL = 2.0
#: Seconds without a heartbeat before a node is Offline.
OFFLINE_AFTER = 10.0
#: Seconds a dispatcher lease lives without renewal.
LEASE_TTL = 6.0
#: Seconds before Redis hands an unacknowledged task message out again. Long on
#: purpose: a shard outliving it is not run twice (dmg.site.attempts refuses the copy),
#: but recovering a dead node is the dispatcher's job, not the broker's.
BROKER_VISIBILITY_TIMEOUT = 12 * 3600.0
#: Times a shard may kill the worker process running it (OOM, crash) before it fails.
SHARD_MAX_WORKER_DEATHS = 3
#: Seconds a dispatcher's long-poll for activity runs waits at most.
CLAIM_WAIT = 20.0
#: A shard holds at most this many files ... (shards are sized by the work and the free
#: slots under these caps: dmg/sharding.py)
SHARD_MAX_FILES = 2000
#: ... and at most this many bytes (a single larger file is a shard of its own).
SHARD_MAX_BYTES = 256 * 1024 * 1024
#: Shards placed on a node beyond its free slots (keeps node queues short).
MAX_QUEUED_PER_NODE = 1
#: Small shards one Celery message may carry when the backlog exceeds the free slots
#: (dispatcher/packing.py); 1: one shard per message, always.
MAX_CARRIED_PER_MESSAGE = 8
MAX_NODES_PER_GATEWAY = 64
#: The largest request body the cloud reads (bytes); larger ones are refused (413) unread.
CLOUD_MAX_BODY = 8 * 1024 * 1024
#: Seconds of node-metrics history the cloud keeps (``DMG_CLOUD_HISTORY_RETENTION``; 7 days).
CLOUD_HISTORY_RETENTION = 7 * 86400.0
#: Seconds the cloud keeps a run after it ended (``DMG_CLOUD_RUN_RETENTION``; 90 days; 0: forever).
CLOUD_RUN_RETENTION = 90 * 86400.0
#: Seconds between a node's checks that it can reach every store it may be given.
STORE_CHECK_INTERVAL = 30.0
#: Per-node autoscaling of the concurrent-job limit between a floor and a ceiling
#: (workers.agent.autoscale); a ceiling of 0 turns it off.
AUTOSCALE_MIN = 1
AUTOSCALE_MAX = 0
#: Seconds between two autoscaling decisions of a node.
AUTOSCALE_INTERVAL = 10.0
FLOWER_PORT = 5555
FLOWER_USER = "admin"
LOG_LEVEL = "INFO"
UPGRADE_DRAIN_TIMEOUT = 300.0
#: How every dmg process writes its log: "text" or "json" (one object per line).
LOG_FORMAT = "text"
