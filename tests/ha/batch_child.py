"""Copy a folder of small files in a process of its own, fenced by a real attempt,
so a test can pause it (SIGSTOP) right before a batch's fencing check.

``python -m tests.ha.batch_child REDIS_URL GATEWAY SHARD ATTEMPT SRC DST LOG [MOUNTINFO]``
copies ``SRC`` to ``DST`` with :func:`dmg.transfer.copy_entries` (``parallel_files`` 1:
in the calling thread when both are on local file systems, else in one copy thread; a
``MOUNTINFO`` file read instead of the process's own mount table decides), asking
``is_current`` before each batch commits. Before each check it appends ``check N`` to
``LOG`` and waits :data:`PAUSE` s (a slow round trip: the window the test stops it
in), after it ``checked N <answer>``. Prints the outcome, with the names of the threads
that copied, as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from dmg.connectors import StoreSpec, mounts
from dmg.connectors.file import FileConnector
from dmg.errors import StaleAttempt
from dmg.site.boundary import SiteRedis
from dmg.site.state import SiteState
from dmg.transfer import CopyOptions, copy_entries, engine

PAUSE = 2.0


def main(argv: list[str]) -> int:
    url, gateway, shard_id, attempt, src, dst, log_path, *mountinfo = argv
    if mountinfo:
        mounts.MOUNTINFO = mountinfo[0]
    engine.INLINE_BATCH_FILES = engine.BATCH_FILES  # the test counts batches of 64 for both copiers
    state = SiteState(SiteRedis.from_url(url), gateway)
    source = FileConnector(StoreSpec("src", "file", src))
    sink = FileConnector(StoreSpec("dst", "file", dst))
    log = Path(log_path)
    checks = 0
    threads: set[str] = set()

    def may_commit() -> bool:
        nonlocal checks
        checks += 1
        with log.open("a") as fh:
            fh.write(f"check {checks}\n")
        time.sleep(PAUSE)
        current = state.is_current(shard_id, int(attempt))
        with log.open("a") as fh:
            fh.write(f"checked {checks} {current}\n")
        return current

    try:
        result = copy_entries(source, sink, list(source.list("")), source_prefix="", sink_prefix="",
                              staging_id=f"{shard_id}.{attempt}", may_commit=may_commit,
                              options=CopyOptions.from_json({"parallel_files": 1}),
                              on_bytes=lambda _n: threads.add(threading.current_thread().name))
        outcome: dict[str, object] = {"outcome": "done", "copied": result.copied}
    except StaleAttempt as exc:
        outcome = {"outcome": "stale", "error": str(exc)}
    outcome["threads"] = sorted(threads)
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
