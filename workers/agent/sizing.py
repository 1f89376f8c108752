"""A node's default concurrent-job limit, from the size of its machine.

The formula::

    by_cpu    = 2 * cores                              (copies mostly wait on I/O)
    by_memory = (memory - 1 GiB) // 512 MiB            (1 GiB kept for the OS and dmg,
                                                        512 MiB per job: chunk buffers,
                                                        SDK clients, a prefork child)
    limit     = clamp(min(by_cpu, by_memory), 1, 64)

So a 2-core 4 GiB machine runs 4 jobs, an 8-core 32 GiB machine 16, a 1-core
1 GiB machine 1. ``2 * cores`` is rounded down, so a container given 1.5 CPUs runs
at most 3 jobs. ``DMG_NODE_CONCURRENCY`` (``settings.node_concurrency > 0``)
overrides it.

The machine is the container when it has limits: the cgroup's CPU quota and memory
limit (:mod:`workers.agent.cgroup`) are read first, each used when it is below the
host's figure; the host's (usable CPUs, total memory, psutil) otherwise. A cgroup
file that cannot be read as a limit is logged as a warning and the host's figures
are used. :func:`machine_size` says which source sized the node ("cgroup" or "host").
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from settings import Settings
from workers.agent.cgroup import DEFAULT_ROOT, MalformedCgroup, cgroup_limits

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2
RESERVED_MEMORY = 1 * GIB
MEMORY_PER_JOB = 512 * MIB
JOBS_PER_CORE = 2
MAX_LIMIT = 64


SizeSource = Literal["cgroup", "host"]


@dataclass(frozen=True)
class MachineSize:
    """The CPUs and memory a node may use, and where they were read ("cgroup" or "host")."""

    cpus: float
    memory: int
    source: SizeSource


def default_limit(cores: float, memory_bytes: int) -> int:
    """The concurrent-job limit for a machine with ``cores`` CPUs and ``memory_bytes`` RAM."""
    by_cpu = max(1, math.floor(JOBS_PER_CORE * max(cores, 0)))
    by_memory = max(memory_bytes - RESERVED_MEMORY, 0) // MEMORY_PER_JOB
    return max(1, min(by_cpu, by_memory, MAX_LIMIT))


def host_size() -> tuple[int, int]:
    """``(usable CPUs, total memory)`` of the host, as psutil and the CPU affinity see it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores, int(psutil.virtual_memory().total)


def machine_size(*, cgroup_root: Path = DEFAULT_ROOT, self_cgroup: str | None = None,
                 host: tuple[int, int] | None = None) -> MachineSize:
    """The container's limits where they are below the host's figures, else the host's.

    ``host`` is ``(cpus, memory)`` (default :func:`host_size`); ``cgroup_root`` and
    ``self_cgroup`` as :func:`workers.agent.cgroup.cgroup_limits` takes them. Never raises
    for a bad cgroup file: it logs a warning and returns the host's figures.
    """
    cores, memory = host if host is not None else host_size()
    try:
        limits = cgroup_limits(cgroup_root, self_cgroup=self_cgroup)
    except MalformedCgroup as exc:
        log.warning("cannot read the container's limits, sizing from the host: %s", exc)
        return MachineSize(cpus=float(cores), memory=memory, source="host")
    cpus = float(cores)
    source: SizeSource = "host"
    if limits.cpus is not None and limits.cpus < cpus:
        cpus, source = round(limits.cpus, 2), "cgroup"
    if limits.memory is not None and limits.memory < memory:
        memory, source = limits.memory, "cgroup"
    return MachineSize(cpus=cpus, memory=memory, source=source)


def machine_limit(size: MachineSize | None = None) -> int:
    """:func:`default_limit` for this machine (:func:`machine_size`) or for ``size``."""
    size = size if size is not None else machine_size()
    return default_limit(size.cpus, size.memory)


def limit_source(settings: Settings) -> str:
    """What set the node's default limit: "setting" (DMG_NODE_CONCURRENCY), "cgroup" or "host"."""
    if settings.node_concurrency > 0:
        return "setting"
    return machine_size().source


def node_limit(settings: Settings) -> int:
    """``settings.node_concurrency`` when set (> 0), else :func:`machine_limit`."""
    if settings.node_concurrency > 0:
        return settings.node_concurrency
    return machine_limit()
