"""The CPU and memory limits a container (a Linux control group) puts on this process.

:func:`cgroup_limits` reads, under a cgroup root (``/sys/fs/cgroup``; a parameter so a
test can feed it files in a temporary directory):

- cgroup v2 (the root has ``cgroup.controllers``): ``memory.max`` (bytes, or ``max``)
  and ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``), in this process's own
  group (``/proc/self/cgroup``'s ``0::/path``) and every group above it: the
  tightest one holds;
- cgroup v1: ``memory/memory.limit_in_bytes`` (a value near 2**63 means none) and
  ``cpu/cpu.cfs_quota_us`` / ``cpu/cpu.cfs_period_us`` (quota -1 means none), in the
  process's own group of each controller, else at the controller's root.

A limit that is absent or "no limit" is ``None``. A file that exists but cannot be
read as a limit raises :class:`MalformedCgroup` (the caller falls back to the host).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
#: cgroup v1 writes "no limit" as the largest page-aligned 63-bit number; anything from
#: 2**60 up is taken as unlimited.
V1_UNLIMITED = 2**60


class MalformedCgroup(ValueError):
    """A cgroup limit file exists but does not hold a limit."""


@dataclass(frozen=True)
class CgroupLimits:
    cpus: float | None = None
    memory: int | None = None

    @property
    def limited(self) -> bool:
        return self.cpus is not None or self.memory is not None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedCgroup(f"{path}: {exc}") from exc


def _own_paths(self_cgroup: str, controller: str) -> list[PurePosixPath]:
    """The process's group for ``controller`` ("" = the v2 unified line) and its parents."""
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        names = parts[1].split(",") if parts[1] else [""]
        if controller in names:
            path = PurePosixPath(parts[2] or "/")
            return [path, *path.parents] if str(path) != "/" else [path]
    return [PurePosixPath("/")]


def _under(root: Path, group: PurePosixPath) -> Path:
    return root.joinpath(*group.parts[1:]) if group.parts else root


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _v2_memory(text: str, path: Path) -> int | None:
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise MalformedCgroup(f"{path}: {text!r} is neither a byte count nor 'max'") from exc


def _v2_cpus(text: str, path: Path) -> float | None:
    fields = text.split()
    if not fields or len(fields) > 2:
        raise MalformedCgroup(f"{path}: {text!r} is not '<quota> <period>'")
    if fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) == 2 else 100_000
    except ValueError as exc:
        raise MalformedCgroup(f"{path}: {text!r} is not '<quota> <period>'") from exc
    if quota <= 0 or period <= 0:
        raise MalformedCgroup(f"{path}: {text!r} has a quota or period that is not positive")
    return quota / period


def _v2(root: Path, self_cgroup: str) -> CgroupLimits:
    cpus: float | None = None
    memory: float | None = None
    for group in _own_paths(self_cgroup, ""):
        where = _under(root, group)
        if (path := where / "memory.max").exists() and (text := _read(path)) is not None:
            memory = _min(memory, _v2_memory(text, path))
        if (path := where / "cpu.max").exists() and (text := _read(path)) is not None:
            cpus = _min(cpus, _v2_cpus(text, path))
    return CgroupLimits(cpus=cpus, memory=None if memory is None else int(memory))


def _v1_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise MalformedCgroup(f"{path}: {text!r} is not a number") from exc


def _v1_dir(root: Path, self_cgroup: str, controller: str, filename: str) -> Path | None:
    """The controller's directory for this process (its own group, else the mount's root)."""
    base = root / controller
    own = _under(base, _own_paths(self_cgroup, controller)[0])
    for where in (own, base):
        if (where / filename).exists():
            return where
    return None


def _v1(root: Path, self_cgroup: str) -> CgroupLimits:
    memory: int | None = None
    if (where := _v1_dir(root, self_cgroup, "memory", "memory.limit_in_bytes")) is not None:
        value = _v1_int(where / "memory.limit_in_bytes")
        memory = value if value is not None and 0 < value < V1_UNLIMITED else None
    cpus: float | None = None
    if (where := _v1_dir(root, self_cgroup, "cpu", "cpu.cfs_quota_us")) is not None:
        quota = _v1_int(where / "cpu.cfs_quota_us")
        period = _v1_int(where / "cpu.cfs_period_us") or 100_000
        if quota is not None and quota > 0:
            if period <= 0:
                raise MalformedCgroup(f"{where / 'cpu.cfs_period_us'}: period {period} is not positive")
            cpus = quota / period
    return CgroupLimits(cpus=cpus, memory=memory)


def cgroup_limits(root: Path = DEFAULT_ROOT, *, self_cgroup: str | None = None) -> CgroupLimits:
    """The limits on this process (see the module's docstring); raises MalformedCgroup.

    ``self_cgroup`` is the text of ``/proc/self/cgroup`` (read when None; "" when absent).
    """
    if self_cgroup is None:
        try:
            self_cgroup = SELF_CGROUP.read_text(encoding="ascii")
        except OSError:
            self_cgroup = ""
    if (root / "cgroup.controllers").exists():
        return _v2(root, self_cgroup)
    if (root / "memory").is_dir() or (root / "cpu").is_dir():
        return _v1(root, self_cgroup)
    return CgroupLimits()
