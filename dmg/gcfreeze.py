"""Keep a long-running process's start-up objects out of the garbage collector's passes.

A server imports its libraries and builds its app once, then runs for hours: those
objects (about 190,000 in the cloud, as many in a node's agent) live as long as the
process, yet CPython 3.11's full collections walk every one of them each time. In the
cloud a full collection during a bulk run of 400 activities took 100-460 ms (a load of
5-8), all of it on the one core its requests need. :func:`keep_startup_objects` moves
them to the permanent generation (``gc.freeze``): later full collections walk only what
the process made since. A frozen object that becomes garbage is never freed, so call it
once, when the start-up is over, and never in a process that builds and drops apps (a
test run).
"""

from __future__ import annotations

import gc


def keep_startup_objects() -> int:
    """Collect what start-up left as garbage, then freeze every object this process holds;
    -> how many objects are frozen now (``gc.get_freeze_count``)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
