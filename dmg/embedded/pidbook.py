"""Every process an embedded site started, so that none outlives it.

A :class:`PidBook` remembers each process it is shown (pid and start time, so a pid
reused by a stranger is left alone), grouped by the top-level child that started it:
a node's Celery worker lives in a session of its own and is not found from its node
once the node died. The book is mirrored into a file (``<data dir>/site.pids``) so the
next site on that data dir can reap what a site killed with SIGKILL left running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` ([] if it is gone)."""
    with contextlib.suppress(psutil.Error):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return []


def kill_survivors(snapshot: Iterable[tuple[int, float]], *, outlived: str,
                   level: int = logging.WARNING) -> None:
    """SIGKILL each ``(pid, start time)`` still running as that same process, and its children."""
    for pid, created in snapshot:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                log.log(level, "killing process %s (%s) that outlived %s", pid,
                        " ".join(proc.cmdline()[:6]), outlived)
                family = [*proc.children(recursive=True), proc]
                for member in family:
                    with contextlib.suppress(psutil.Error):
                        member.kill()
                psutil.wait_procs(family, timeout=5)


class PidBook:
    """The processes of one site, mirrored into ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: dict[int, float] = {}  # pid -> start time
        self._families: dict[int, dict[int, float]] = {}  # top-level pid -> what it started

    def record(self, tops: Iterable[int]) -> None:
        """Remember the live top-level processes ``tops`` and everything below them."""
        before = len(self._known)
        for top in tops:
            family = self._families.setdefault(top, {})
            for pid in [top, *descendants(top)]:
                if pid not in self._known:
                    with contextlib.suppress(psutil.Error):
                        self._known[pid] = psutil.Process(pid).create_time()
                if pid != top and pid in self._known:
                    family[pid] = self._known[pid]
        if len(self._known) != before or not self.path.exists():
            entries = [{"pid": pid, "created": created} for pid, created in sorted(self._known.items())]
            self.path.write_text(json.dumps(entries))

    def snapshot(self) -> list[tuple[int, float]]:
        """Every process remembered, as ``(pid, start time)``."""
        return sorted(self._known.items())

    def reap_family(self, top: int) -> None:
        """Kill what ``top`` started that outlived it (expected after a death: logged at INFO)."""
        family = self._families.pop(top, {})
        kill_survivors(sorted(family.items()), outlived=f"its parent {top}", level=logging.INFO)

    def forget(self) -> None:
        """Forget everything (the site stopped) and remove the file."""
        self._known.clear()
        self._families.clear()
        self.path.unlink(missing_ok=True)

    def reap_leftovers(self) -> None:
        """Kill the processes the file lists (a site killed before it could stop them)."""
        try:
            entries = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return
        for entry in entries:
            with contextlib.suppress(psutil.Error, KeyError, TypeError, ProcessLookupError):
                proc = psutil.Process(int(entry["pid"]))
                if abs(proc.create_time() - float(entry["created"])) < 0.01:
                    log.warning("stopping process %s left over by an earlier site", proc.pid)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.kill()
        self.path.unlink(missing_ok=True)
