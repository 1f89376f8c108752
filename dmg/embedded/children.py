"""The child processes of an embedded site, each logging to a file of its own.

A child is started in a session of its own (its own process group: stopping it stops
what it started), with stdin closed and stdout and stderr appended to
``<log dir>/<name>.log``.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Mapping
from pathlib import Path


@dataclasses.dataclass
class Child:
    """One process the site started."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


def spawn(name: str, args: list[str], *, env: Mapping[str, str], log_dir: Path) -> Child:
    """Start ``args`` as child ``name`` in a new session, logging to ``<log_dir>/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env), start_new_session=True)
    return Child(name, proc, log_path)


def log_tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of ``path`` joined by `` | `` ("" if unreadable)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])
