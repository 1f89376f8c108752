"""Helpers to run and stop child processes and wait on ports: a leaf (stdlib and settings only),
used by the embedded site, the cloud server, the node and the tests alike."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

from settings import process_environ


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, *, timeout: float, proc: subprocess.Popen[bytes] | None = None,
                  what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {port}")
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0,
                 sig: int = signal.SIGTERM, group: bool = False) -> int | None:
    """Send ``sig`` (to the process group when ``group``), wait, then SIGKILL."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        return proc.wait(timeout=5)


def child_environ(overrides: dict[str, str]) -> dict[str, str]:
    """The environment of a child process: this process's own plus ``overrides``
    (see :func:`settings.process_environ`)."""
    return process_environ(overrides)


def stop_group(proc: subprocess.Popen[bytes], *, timeout: float = 20.0) -> int | None:
    """Stop a child started with ``start_new_session=True`` and everything it started.

    SIGTERM goes to the child only (it shuts its own workers down cleanly); after
    ``timeout`` s, or once it has exited, whatever is left in its process group gets
    SIGKILL. Returns the child's exit code.
    """
    code = stop_process(proc, timeout=timeout)
    kill_group(proc.pid)
    return code


def wait_then_kill(proc: subprocess.Popen[bytes], *, timeout: float) -> int | None:
    """Wait up to ``timeout`` s for a child already asked to stop (no second signal: a
    second SIGTERM may cut its clean shutdown short), then SIGKILL its process group."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        code = proc.wait(timeout=5)
    kill_group(proc.pid)
    return code


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in group ``pgid`` (none left is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
