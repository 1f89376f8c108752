"""``echo``: one line of text to stdout or stderr, flushed, as ``click.echo`` writes a
``str`` (the CLI's output modules use this one, so the ``pipeline run --wait`` fast path,
:mod:`dmg.cli.fastpath`, never imports click)."""

from __future__ import annotations

import sys


def echo(message: str = "", *, err: bool = False) -> None:
    """Write ``message`` and a newline to stdout (stderr with ``err``), then flush."""
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()
