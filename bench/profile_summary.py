"""Where a site's processes spend their CPU: py-spy recordings, summed by role and area.

    from profile_summary import Spies, summary
    roles = {pid: "cloud" | "dispatcher" | ..., ...}           # every process to tell apart
    with Spies(out_dir, [cloud_pid, node_pid, ...], roles) as spies:  # each with its children
        ...                                                       # the work to profile
    print(summary(spies.files, roles))

    .venv/bin/python bench/profile_summary.py DIR    # the summary of recordings kept in DIR

:class:`Spies` runs one ``py-spy record --subprocesses --nonblocking --format raw`` per
process given (py-spy from the venv, or on ``PATH``: ``pip install py-spy``; it needs
ptrace, which root has and a container may not). Each raw file holds collapsed stacks,
one line per stack with its sample count; a stack starts with the chain of processes
(``process PID:"command"``) down to the one sampled. :func:`summary` charges each sample to
the role of the sampled process (a child of a role's process that was not named, such as
a Celery pool process forked later, gets ``<role> child``), then prints for each role its
share of every area (the package or module of the innermost frame: SQLAlchemy, kombu,
``dmg/cloud`` ...) and its busiest functions, counting a function once per stack it is on.
Only a thread holding the GIL is sampled (``--gil``): a thread blocked on a socket, a lock
or a poll releases it, so the shares are of Python CPU, not of wall time (C code that
releases the GIL while it works, such as SQLite's, counts only its Python part).
"""

from __future__ import annotations

import collections
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

#: The file in a recording's directory that names each process's role.
ROLES_FILE = "roles.json"
#: Samples per second per process.
RATE = 200
#: The innermost frame's path -> its area (first match wins); otherwise the path's first part.
AREAS = (
    ("dmg/cloud/", "dmg/cloud"),
    ("dmg/site/", "dmg/site"),
    ("dmg/", "dmg (other)"),
    ("dispatcher/", "dispatcher"),
    ("workers/", "workers"),
    ("settings/", "settings"),
    ("<frozen importlib", "import"),
    ("<frozen runpy", "python (top frame only)"),
)


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy: pip install py-spy (it records the site's processes)")
    return found


class Spies:
    """One py-spy recorder per process in ``pids`` (and its children), from entry to exit."""

    def __init__(self, out: Path, pids: list[int], roles: dict[int, str]) -> None:
        self.out = out
        self.pids = pids
        self.roles = roles  # kept beside the recordings: `python bench/profile_summary.py DIR`
        self.files: list[Path] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Spies:
        spy = _py_spy()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / ROLES_FILE).write_text(json.dumps(self.roles))
        for pid in self.pids:
            path = self.out / f"py-spy-{pid}.txt"
            self.files.append(path)
            self._procs.append(subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--subprocesses", "--gil", "--nonblocking",
                 "--rate", str(RATE), "--format", "raw", "--output", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # attached before the work starts
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for proc in self._procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for proc in self._procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def area_of(frame: str) -> str:
    """``func (path:line)`` -> its area (:data:`AREAS`, else the path's first part)."""
    path = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    for prefix, area in AREAS:
        if path.startswith(prefix):
            return area
    if path.startswith("<frozen "):  # a frozen stdlib module (posixpath, os, codecs ...)
        return path.removeprefix("<frozen ").rstrip(">")
    head = path.split("/", 1)[0]
    return head.removesuffix(".py") or "?"


def _role(processes: list[str], roles: dict[int, str]) -> str:
    """The role of the sampled process (the last of the stack's process frames)."""
    pids = [int(p.split()[1].split(":", 1)[0]) for p in processes]
    if pids and pids[-1] in roles:
        return roles[pids[-1]]
    for pid in reversed(pids[:-1]):
        if pid in roles:
            return f"{roles[pid]} child"
    return "other"


def tally(files: list[Path], roles: dict[int, str]) -> dict[str, dict[str, collections.Counter[str]]]:
    """-> {role: {"samples": {"": n}, "areas": self samples by area, "functions": samples
    on stack by function}}."""
    out: dict[str, dict[str, collections.Counter[str]]] = collections.defaultdict(
        lambda: {"samples": collections.Counter(), "areas": collections.Counter(),
                 "functions": collections.Counter()})
    for path in files:
        if not path.exists():
            continue
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                n = int(count)
                frames = stack.split(";")
                processes = [f for f in frames if f.startswith("process ")]
                code = [f for f in frames if not f.startswith("process ")]
                if not code:
                    continue
                entry = out[_role(processes, roles)]
                entry["samples"][""] += n
                entry["areas"][area_of(code[-1])] += n
                for function in set(code):
                    entry["functions"][_short(function)] += n
    return out


def _short(frame: str) -> str:
    """``func (path:line)`` -> ``func (path)``: one entry per function, whatever the line."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rpartition(':')[0]})"


def summary(files: list[Path], roles: dict[int, str], *, areas: int = 8, functions: int = 8) -> str:
    """The profile summary of :func:`tally`, as text: each role's busiest areas (share of its
    own samples, innermost frame) and functions (share of samples they are on), busiest role
    first."""
    tallied = tally(files, roles)
    lines = [f"profile (py-spy --gil, {RATE} samples/s per process; share of each role's samples):"]
    for role, entry in sorted(tallied.items(), key=lambda item: -item[1]["samples"][""]):
        total = entry["samples"][""]
        if not total:
            continue
        lines.append(f"  {role}: {total} samples")
        lines.append("    areas (innermost frame): " + ", ".join(
            f"{area} {100 * n / total:.0f}%" for area, n in entry["areas"].most_common(areas)))
        # A function on (nearly) every stack (a thread's or a process's entry) tells nothing.
        busiest = [(f, n) for f, n in entry["functions"].most_common(functions * 6)
                   if n < 0.9 * total][:functions]
        lines.append("    on the stack: " + "; ".join(f"{100 * n / total:.0f}% {f}" for f, n in busiest))
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = Path(sys.argv[1])
    roles = {int(pid): role for pid, role in json.loads((out / ROLES_FILE).read_text()).items()}
    print(summary(sorted(out.glob("py-spy-*.txt")), roles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
