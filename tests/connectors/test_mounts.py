"""Whether a store's file operations wait on a network: the mount table, read and decided.

Given real-looking ``/proc/self/mountinfo`` lines (optional fields, escaped spaces,
a point mounted twice) and this machine's own tmpfs and ext4 folders, then the file
system type is the longest mount point's, local types are local and everything else
(nfs, cifs, fuse, 9p, unknown, no table) is taken to wait; and the engine copies a
shard of small files in its calling thread only when neither store waits.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dmg.connectors import StoreSpec, mounts
from dmg.connectors.file import FileConnector
from dmg.transfer import CopyOptions, copy_entries
from tests.workers.support import write_files

TABLE = "\n".join([
    "22 27 0:21 / /proc rw,relatime - proc proc rw",
    "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard",
    "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683584k",
    "30 25 0:27 / /dev/shm rw,relatime - xfs /dev/vdb rw",
    "41 27 0:40 / /mnt/team\\040share rw,relatime shared:5 master:2 - cifs //fs/team rw,vers=3.1.1",
    "42 27 0:41 /export /mnt/nfs rw,relatime - nfs4 server:/export rw,vers=4.2",
    "43 42 0:42 / /mnt/nfs/local rw - btrfs /dev/vdc rw",
    "44 27 0:43 / /mnt/fuse rw,nosuid - fuse.sshfs host:/ rw",
    "45 27 0:44 / /mnt/odd rw - weirdfs none rw",
    "a line that is not a mount",
])


def test_the_mount_table_is_parsed_with_optional_fields_and_escapes() -> None:
    parsed = mounts.parse_mountinfo(TABLE)

    assert [(m.point, m.fstype) for m in parsed] == [
        ("/proc", "proc"), ("/", "ext4"), ("/dev/shm", "tmpfs"), ("/dev/shm", "xfs"),
        ("/mnt/team share", "cifs"), ("/mnt/nfs", "nfs4"), ("/mnt/nfs/local", "btrfs"),
        ("/mnt/fuse", "fuse.sshfs"), ("/mnt/odd", "weirdfs")]


@pytest.mark.parametrize(("path", "fstype", "waits"), [
    ("/", "ext4", False),
    ("/home/user/data", "ext4", False),
    ("/dev/shm/x", "xfs", False),  # mounted twice: the later one is on top
    ("/mnt/team share/in", "cifs", True),
    ("/mnt/team", "ext4", False),  # a prefix of the name only: not inside the share
    ("/mnt/nfs/a/b", "nfs4", True),
    ("/mnt/nfs/local/a", "btrfs", False),  # a local disk mounted inside the share
    ("/mnt/fuse/x", "fuse.sshfs", True),
    ("/mnt/odd/x", "weirdfs", True),  # unknown: taken to wait
])
def test_a_path_belongs_to_its_longest_mount_point(path: str, fstype: str, waits: bool) -> None:
    mount = mounts.mount_of(path, mounts.parse_mountinfo(TABLE))

    assert mount is not None and mount.fstype == fstype
    assert mounts.is_local_type(mount.fstype) is not waits


def test_no_mount_table_means_the_operations_may_wait(tmp_path: Path) -> None:
    assert mounts.filesystem_type(str(tmp_path), mountinfo=str(tmp_path / "missing")) == ""
    assert not mounts.is_local_type("")


def test_this_machines_tmpfs_and_disk_are_local(tmp_path: Path) -> None:
    """The real mount table: /dev/shm is tmpfs, the test's folder a local disk."""
    shm = FileConnector(StoreSpec("shm", "file", "/dev/shm"))
    disk = FileConnector(StoreSpec("disk", "file", str(tmp_path)))

    assert mounts.filesystem_type("/dev/shm") == "tmpfs"
    assert mounts.filesystem_type(str(tmp_path)) in mounts.LOCAL_TYPES
    assert not shm.operations_wait() and not disk.operations_wait()


def copy_threads(tmp_path: Path, *, sizes: dict[str, int]) -> set[str]:
    write_files(tmp_path / "src", sizes)
    (tmp_path / "dst").mkdir(exist_ok=True)
    source = FileConnector(StoreSpec("src", "file", str(tmp_path / "src")))
    sink = FileConnector(StoreSpec("dst", "file", str(tmp_path / "dst")))
    threads: set[str] = set()
    result = copy_entries(source, sink, list(source.list("")), source_prefix="", sink_prefix="",
                          staging_id="t.1", options=CopyOptions.from_json({"parallel_files": 4}),
                          on_bytes=lambda _n: threads.add(threading.current_thread().name))
    assert result.copied == len(sizes)
    return threads


def test_small_files_between_local_folders_are_copied_in_the_calling_thread(tmp_path: Path) -> None:
    threads = copy_threads(tmp_path, sizes={f"d{i % 3}/f{i:03d}": 100 + i for i in range(300)})

    assert threads == {threading.current_thread().name}


def test_small_files_on_a_network_share_keep_the_copy_threads(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The mount table says the folder is an NFS share: the pool overlaps the waits."""
    table = tmp_path / "mountinfo"
    table.write_text(f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                     f"90 1 0:50 / {tmp_path} rw,relatime - nfs4 server:/export rw,vers=4.2\n")
    monkeypatch.setattr(mounts, "MOUNTINFO", str(table))

    threads = copy_threads(tmp_path, sizes={f"f{i:03d}": 100 for i in range(40)})

    assert threads and all(name.startswith("dmg-copy") for name in threads)


def test_a_large_file_keeps_the_copy_threads_on_a_local_disk(tmp_path: Path) -> None:
    threads = copy_threads(tmp_path, sizes={"big": 2 * 1024 * 1024, "a": 10, "b": 20})

    assert threads and all(name.startswith("dmg-copy") for name in threads)
