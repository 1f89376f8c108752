"""Run one attempt of a shard in a process of its own, so a test can kill or pause it.

``python -m tests.ha.shard_child REDIS_URL GATEWAY SHARD ATTEMPT NODE`` runs
:func:`workers.run.shard.run_shard` with an in-memory reporter and prints the
outcome as JSON on its last line.
"""

from __future__ import annotations

import json
import sys

from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from workers.run.reporter import MemoryReporter
from workers.run.shard import run_shard


def main(argv: list[str]) -> int:
    url, gateway, shard_id, attempt, node = argv
    state = SiteState(SiteRedis.from_url(url), gateway)
    outcome = run_shard(shard_id, int(attempt), node=node, state=state, reporter=MemoryReporter())
    print(json.dumps(outcome.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
