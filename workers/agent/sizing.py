"""A node's default concurrent-job limit, from the size of its machine.

The formula::

    by_cpu    = 2 * cores                              (copies mostly wait on I/O)
    by_memory = (memory - 1 GiB) // 512 MiB            (1 GiB kept for the OS and dmg,
                                                        512 MiB per job: chunk buffers,
                                                        SDK clients, a prefork child)
    limit     = clamp(min(by_cpu, by_memory), 1, 64)

So a 2-core 4 GiB machine runs 4 jobs, an 8-core 32 GiB machine 16, a 1-core
1 GiB machine 1. ``DMG_NODE_CONCURRENCY`` (``settings.node_concurrency > 0``)
overrides it.
"""

from __future__ import annotations

import os

import psutil

from settings import Settings

GIB = 1024**3
MIB = 1024**2
RESERVED_MEMORY = 1 * GIB
MEMORY_PER_JOB = 512 * MIB
JOBS_PER_CORE = 2
MAX_LIMIT = 64


def default_limit(cores: int, memory_bytes: int) -> int:
    """The concurrent-job limit for a machine with ``cores`` CPUs and ``memory_bytes`` RAM."""
    by_cpu = JOBS_PER_CORE * max(cores, 1)
    by_memory = max(memory_bytes - RESERVED_MEMORY, 0) // MEMORY_PER_JOB
    return max(1, min(by_cpu, by_memory, MAX_LIMIT))


def machine_limit() -> int:
    """:func:`default_limit` for this machine (usable CPUs, total memory)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return default_limit(cores, psutil.virtual_memory().total)


def node_limit(settings: Settings) -> int:
    """``settings.node_concurrency`` when set (> 0), else :func:`machine_limit`."""
    if settings.node_concurrency > 0:
        return settings.node_concurrency
    return machine_limit()
