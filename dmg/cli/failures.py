"""How ``dmg`` words a failure, shared by the click group (:mod:`dmg.cli.main`) and the
fast path (:mod:`dmg.cli.fastpath`); no click here."""

from __future__ import annotations

import os
import sys


def one_line(text: str) -> str:
    return " ".join(text.split())


def unexpected(exc: BaseException) -> str:
    """The one line for an exception dmg did not expect (a bug; exit 2)."""
    return one_line(f"unexpected {type(exc).__name__}: {exc} "
                    "(this is a bug in dmg; run `dmg --debug ...` for the traceback)")


def quiet_broken_pipe() -> None:
    """Point stdout at /dev/null: the reader is gone, and Python's flush at exit must not
    complain about it (Python docs, ``signal``, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
