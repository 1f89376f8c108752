"""``--watch``: a table redrawn every few seconds until Ctrl-C.

On a terminal, rich redraws it in place (``rich.live.Live``); piped, each round is
printed in full under a ``-- HH:MM:SS`` line, plain text, so a log of it reads as a
series of snapshots. A round that cannot reach the cloud shows the one-line error
and the next round tries again: a watch outlives a cloud restart. Ctrl-C ends it
with exit status 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from dmg.errors import Retryable


def _round(render: Callable[[bool], str], terminal: bool) -> str:
    try:
        return render(terminal)
    except Retryable as exc:  # the cloud is away: say so, keep watching
        return f"error: {exc} (retrying)"


def watch(render: Callable[[bool], str], *, every: float, rounds: int | None = None) -> None:
    """Show ``render(terminal)`` every ``every`` s (``rounds`` times, default until Ctrl-C)."""
    done = 0
    try:
        if sys.stdout.isatty():
            with Live(console=Console(), auto_refresh=False) as live:
                while rounds is None or done < rounds:
                    live.update(Text.from_ansi(_round(render, True)), refresh=True)
                    done += 1
                    if rounds is None or done < rounds:
                        time.sleep(every)
            return
        while rounds is None or done < rounds:
            click.echo(f"-- {time.strftime('%H:%M:%S')}")
            click.echo(_round(render, False))
            click.echo("")
            sys.stdout.flush()
            done += 1
            if rounds is None or done < rounds:
                time.sleep(every)
    except KeyboardInterrupt:
        return
