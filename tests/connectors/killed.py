"""A writer in a child process, SIGKILLed once it says its parts are sent."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kill_once_parts_sent(script: str, *args: str) -> None:
    """Run ``script`` with ``args``; when it prints "parts sent", SIGKILL it (also on any
    failure before that) and check it died of the signal."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "parts sent"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
