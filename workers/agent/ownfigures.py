"""A node's own figures where nodes share a machine: its process tree's CPU and memory.

The tree is the node process (agent, dispatcher candidate) and every descendant: its
Celery worker and the worker's pool children. CPU % is summed over the tree since the
previous sample (100 = one core busy), memory is the sum of resident set sizes. The
bytes its copies moved come from the site state (:meth:`dmg.site.state.SiteState.moved`).
"""

from __future__ import annotations

import os

import psutil


class ProcessTree:
    """Samples the CPU % and resident bytes of process ``pid`` and its descendants."""

    def __init__(self, pid: int | None = None) -> None:
        self.root = psutil.Process(pid or os.getpid())
        self._known: dict[int, psutil.Process] = {}
        self.sample()  # the first CPU reading of each process only starts its measurement

    def _members(self) -> list[psutil.Process]:
        try:
            members = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []
        current: dict[int, psutil.Process] = {}
        for proc in members:
            # Keep the object first seen for a pid: its cpu_percent measures since the last call.
            current[proc.pid] = self._known.get(proc.pid, proc)
        self._known = current
        return list(current.values())

    def sample(self) -> tuple[float, int]:
        """``(cpu percent, resident bytes)`` of the tree now (a process that vanished in
        between counts for nothing)."""
        cpu, rss = 0.0, 0
        for proc in self._members():
            try:
                cpu += proc.cpu_percent(interval=None)
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        return cpu, rss
