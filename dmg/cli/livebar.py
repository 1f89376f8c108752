"""The live progress bar of ``dmg pipeline run --wait`` on a terminal, drawn by rich.

Kept apart from :mod:`dmg.cli.progressbar` so that rich is imported only when stderr is
a terminal: a piped or scripted ``--wait`` pays nothing for it.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from dmg.cli.progressbar import RateMeter, progress_figures


class LiveBar:
    """The progress of a run on a terminal, drawn by rich: a bar, the percentage, then the
    figures of :func:`progress_figures`, redrawn in place on stderr; :meth:`stop` leaves the
    last state on screen."""

    STEPS = 1000

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(BarColumn(bar_width=24), TaskProgressColumn(),
                                  TextColumn("{task.fields[figures]}"),
                                  console=console or Console(stderr=True), auto_refresh=False)
        self._task: TaskID | None = None

    def update(self, run: dict[str, Any], meter: RateMeter | None = None) -> None:
        part, parts = progress_figures(run, meter)
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("", total=self.STEPS, figures="")
        self._progress.update(self._task, completed=round(part * self.STEPS), figures="  ".join(parts),
                              refresh=True)

    def stop(self) -> None:
        if self._task is not None:
            self._progress.stop()
