"""Keep a site's processes running: what ``dmg up`` does after the site started.

A :class:`Supervisor` polls a :class:`Supervised` site. Each process that died is
reported once, with its exit code and the tail of its log, and is started again
after a back-off delay: 1 s, doubling up to 30 s for a process that keeps dying,
back to 1 s once it stayed up for :attr:`Backoff.stable_after` seconds. With
``restart=False`` a dead process is reported and left down; the rest keeps running.

The supervisor never stops the site: only its owner does (``dmg up`` on Ctrl-C or
SIGTERM). A restart that fails is reported and tried again after the next delay.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class Supervised(Protocol):
    """What the supervisor needs of a site."""

    def dead_children(self) -> list[str]:
        """Names of the site's processes that exited (each still counted until restarted)."""
        ...

    def exit_code(self, name: str) -> int | None:
        """The exit code of process ``name`` (negative: killed by that signal)."""
        ...

    def log_path(self, name: str) -> Path:
        """Where process ``name`` logs."""
        ...

    def restart_child(self, name: str) -> int:
        """Start process ``name`` again (same settings, data, port); returns its new pid.
        Raises on failure (the supervisor reports it and tries again later)."""
        ...


@dataclass
class Backoff:
    """The delay before a dead process is started again."""

    first: float = 1.0
    cap: float = 30.0
    #: A process that stayed up this long before it died starts again after ``first``.
    stable_after: float = 30.0

    def next_delay(self, previous: float | None, *, uptime: float) -> float:
        """The delay after a death, given the delay used last time (None: never died)."""
        if previous is None or uptime >= self.stable_after:
            return self.first
        return min(previous * 2, self.cap)


@dataclass
class _Track:
    """One process's supervision state."""

    started: float
    delay: float | None = None
    restart_at: float | None = None  # set while the process is down and to be restarted
    left_down: bool = False


def describe_exit(code: int | None) -> str:
    """``exit code 1`` or ``killed by SIGKILL``."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def log_tail(path: Path, lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of ``path``, joined by `` | `` ("" if unreadable)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


@dataclass
class Supervisor:
    """Report and restart the dead processes of ``site``; call :meth:`tick` periodically."""

    site: Supervised
    say: Callable[[str], None]
    restart: bool = True
    backoff: Backoff = field(default_factory=Backoff)
    clock: Callable[[], float] = time.monotonic
    _tracks: dict[str, _Track] = field(default_factory=dict)

    def tick(self) -> None:
        """Report new deaths, and restart the processes whose delay has passed."""
        now = self.clock()
        for name in self.site.dead_children():
            track = self._tracks.setdefault(name, _Track(started=now))
            if track.left_down:
                continue
            if track.restart_at is None:
                self._report_death(name, track, now)
            elif now >= track.restart_at:
                self._restart(name, track)

    def _report_death(self, name: str, track: _Track, now: float) -> None:
        path = self.site.log_path(name)
        how = describe_exit(self.site.exit_code(name))
        tail = log_tail(path)
        if not self.restart:
            track.left_down = True
            self.say(f"error: {name} stopped unexpectedly ({how}); left down (--no-restart), "
                     "the rest of the site keeps running")
        else:
            track.delay = self.backoff.next_delay(track.delay, uptime=now - track.started)
            track.restart_at = now + track.delay
            self.say(f"error: {name} stopped unexpectedly ({how}); restarting it in {track.delay:.0f} s")
        self.say(f"  log {path}: {tail or '(empty)'}")
        log.info("%s stopped unexpectedly (%s)", name, how)

    def _restart(self, name: str, track: _Track) -> None:
        try:
            pid = self.site.restart_child(name)
        except Exception as exc:  # any failure: report it, try again later
            assert track.delay is not None
            track.delay = self.backoff.next_delay(track.delay, uptime=0.0)
            track.restart_at = self.clock() + track.delay
            self.say(f"error: {name} did not restart: {' '.join(str(exc).split())}; "
                     f"trying again in {track.delay:.0f} s")
            return
        track.started = self.clock()
        track.restart_at = None
        self.say(f"restarted {name} (pid {pid})")
