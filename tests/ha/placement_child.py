"""A dispatcher in a process of its own, for a test to SIGKILL between plan and placement or
in the middle of a placement round.

``python -m tests.ha.placement_child REDIS_URL GATEWAY EPOCH SRC MODE`` plans the activity run
``ar1`` (one shard per file of ``SRC``, a file store) with the lease ``EPOCH``, as the
dispatcher does, and prints ``planned``. ``MODE`` ``plan``: then waits to be killed (its shards
stay pending). ``place``: then places them with the dispatcher's Placer, its real Celery sender
and report outbox (one-step placement), :data:`PAUSE` s before each shard (the window the
test kills it in), printing ``placed N`` as it goes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dispatcher.loop import make_sender
from dispatcher.messages import ShardMessages
from dispatcher.placement import Placer
from dispatcher.planner import plan_activity_run
from dispatcher.reports import PlacementOutbox
from dmg.connectors import StoreSpec
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from settings import Settings

PAUSE = 0.02


def activity_run(src: str) -> dict[str, object]:
    store = StoreSpec("src", "file", src).to_json()
    sink = StoreSpec("dst", "file", str(Path(src).parent / "dst")).to_json()
    return {"id": "ar1", "run_id": "r1", "name": "copy", "source": {"store": store, "path": ""},
            "sink": {"store": sink, "path": ""}, "options": {"overwrite": "always"}}


def main(argv: list[str]) -> int:
    url, gateway, epoch_text, src, mode = argv
    epoch = int(epoch_text)
    state = SiteState(SiteRedis.from_url(url), gateway)
    outbox = PlacementOutbox(state)
    plan_activity_run(activity_run(src), state=state, cloud=None, epoch=epoch,  # type: ignore[arg-type]
                      settings=Settings(shard_max_files=1), outbox=outbox)
    print("planned", flush=True)
    if mode == "plan":
        time.sleep(3600)
        return 0
    sender = make_sender(Settings(redis_url=url, gateway=gateway))
    placed = 0

    def holding() -> bool:  # asked before every placement: the slow step the test kills in
        time.sleep(PAUSE)
        return True

    placer = Placer(state=state, sender=sender, cloud=outbox, holding=holding, max_queued=10_000,
                    epoch=lambda: epoch, messages=ShardMessages.of(sender))
    while state.pending():
        placed += len(placer.place_pending())
        print(f"placed {placed}", flush=True)
    time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
