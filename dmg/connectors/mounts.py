"""Which file system a folder lives on, and whether its operations wait on a network.

Read from ``/proc/self/mountinfo`` (proc(5)): per line, the mount point is the fifth
field (spaces, tabs, newlines and backslashes in it written as ``\\040``, ``\\011``,
``\\012``, ``\\134``) and the file system type is the first field after the ``-``
that ends the optional fields. A path belongs to the mount whose mount point is its
longest prefix (the last such line when one point is mounted twice: it is on top).

:func:`waits_on_network` says True unless that type is a local one
(:data:`LOCAL_TYPES`): a network file system (nfs, cifs/smb3, 9p, ceph, glusterfs,
``fuse.*``), a type it does not know, or no mount table at all. The answer is kept
per folder for :data:`CACHE_SECONDS` (a share mounted later over a folder is seen
within that time).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"
#: File systems on this machine's own disks or memory: an operation does not wait on a network.
#: overlay stacks local folders (a container's root); a network file system under it is rare.
LOCAL_TYPES = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs", "jfs",
    "reiserfs", "bcachefs", "nilfs2", "overlay", "vfat", "exfat", "ntfs3", "hfsplus",
})
CACHE_SECONDS = 60.0

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str


def _unescape(field: str) -> str:
    if "\\" not in field:
        return field
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``mountinfo`` text, in its order; malformed lines are left out."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
        except ValueError:
            continue
        if separator + 1 >= len(fields):
            continue
        mounts.append(Mount(_unescape(fields[4]), fields[separator + 1]))
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding the absolute ``path`` (longest mount point that is a prefix of it)."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/")
        inside = path == mount.point or point == "" or path.startswith(point + "/")
        if inside and (best is None or len(point) >= len(best.point.rstrip("/"))):
            best = mount
    return best


def is_local_type(fstype: str) -> bool:
    """Whether a file system type is one of :data:`LOCAL_TYPES` (``fuse.*``, network and
    unknown types are not)."""
    return fstype in LOCAL_TYPES


def filesystem_type(path: str, *, mountinfo: str | None = None) -> str:
    """The type of the file system holding ``path`` (its real path), "" when unknown;
    ``mountinfo``: the mount table to read (default :data:`MOUNTINFO`)."""
    try:
        with open(mountinfo or MOUNTINFO, encoding="utf-8", errors="surrogateescape") as fh:
            mounts = parse_mountinfo(fh.read())
    except OSError:
        return ""
    mount = mount_of(os.path.realpath(path), mounts)
    return mount.fstype if mount is not None else ""


_cache: dict[tuple[str, str], tuple[float, bool]] = {}
_cache_lock = threading.Lock()


def waits_on_network(path: str) -> bool:
    """Whether file operations under ``path`` may wait on a network (see the module
    docstring); kept per ``path`` for :data:`CACHE_SECONDS`."""
    key = (MOUNTINFO, path)
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    waits = not is_local_type(filesystem_type(path, mountinfo=key[0]))
    with _cache_lock:
        _cache[key] = (now, waits)
    return waits
