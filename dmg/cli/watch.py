"""``--watch``: a table redrawn every few seconds until Ctrl-C.

On a terminal, rich redraws it in place (``rich.live.Live``); piped, each round is
printed in full under a ``-- HH:MM:SS`` line, plain text, so a log of it reads as a
series of snapshots. A round that cannot reach the cloud shows the one-line error
and the next round tries again: a watch outlives a cloud restart. Ctrl-C ends it
with exit status 0: the first Ctrl-C ends the watch between two rounds (a request under
way finishes, so no HTTP client is left half-way inside a lock), a second one at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

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


@contextlib.contextmanager
def _ctrl_c_stops() -> Iterator[threading.Event]:
    """An event set by the first SIGINT (also when SIGINT was ignored, as for a script's
    background job); the next SIGINT raises KeyboardInterrupt as usual."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach the main thread only (an embedded caller keeps its own)
        return

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def watch(render: Callable[[bool], str], *, every: float, rounds: int | None = None) -> None:
    """Show ``render(terminal)`` every ``every`` s (``rounds`` times, default until Ctrl-C)."""
    done = 0
    with _ctrl_c_stops() as stop:
        try:
            if sys.stdout.isatty():
                with Live(console=Console(), auto_refresh=False) as live:
                    while (rounds is None or done < rounds) and not stop.is_set():
                        live.update(Text.from_ansi(_round(render, True)), refresh=True)
                        done += 1
                        if (rounds is None or done < rounds) and stop.wait(every):
                            break
                return
            while (rounds is None or done < rounds) and not stop.is_set():
                click.echo(f"-- {time.strftime('%H:%M:%S')}")
                click.echo(_round(render, False))
                click.echo("")
                sys.stdout.flush()
                done += 1
                if (rounds is None or done < rounds) and stop.wait(every):
                    break
        except KeyboardInterrupt:  # the second Ctrl-C
            return
