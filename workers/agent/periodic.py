"""A background thread that runs one round of work every few seconds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``tick`` every ``interval`` s on a daemon thread between :meth:`start` and
    :meth:`stop`. A round that raises is logged and the next one runs anyway: a
    heartbeat or a check must outlive any single failure."""

    def __init__(self, tick: Callable[[], object], *, interval: float, name: str, what: str) -> None:
        self.tick = tick
        self.interval = interval
        self.name = name
        self.what = what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep going whatever happens
                log.exception("%s failed (%s)", self.what, self.name)
            self._stop.wait(self.interval)
