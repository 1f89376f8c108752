"""The ``file`` store: a local directory or a mounted network share.

Writes go to a hidden staging file beside the target
(``.dmg-staging.<staging id>.<name>``) and are renamed over it on commit, so a
reader never sees half a file. Paths that escape the store's root (``..``,
absolute paths, symlinks pointing out) are refused with ``PermissionDenied``.

Capability ``distributed_write`` (:mod:`dmg.connectors.distributed`), valid
because every node mounts the same share at the same path: the handle names one
staging file beside the target (``.dmg-staging.dw-<random>.<name>``), created at
its final size; each part is written in place at its offset (``pwrite``, fsync'd
when the store's ``fsync`` option is on) and re-read for its MD5 — or, from a local
file (:class:`~dmg.connectors.capabilities.KernelRangeWrite`), copied there by the
kernel and re-read for its XXH3; the commit
renames the staging file over the target (a repeated commit finds the target
already there with the expected size); abort deletes the staging file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import stat as stat_mode
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from dmg.connectors import localcopy, mounts
from dmg.connectors._support import ChunkStream, buffered
from dmg.connectors.base import Connector, Entry, StagedWriter, StoreSpec
from dmg.connectors.capabilities import (
    DistributedWrite,
    KeepsMtime,
    KernelCopyIn,
    KernelRangeWrite,
    LocalFiles,
    RangedRead,
    StagedCrc32,
)
from dmg.errors import BadInput, Fatal, NotFound, PermissionDenied, Retryable

STAGING_PREFIX = ".dmg-staging."
#: Bytes a part copied by the kernel moves between two calls of its ``on_step`` (which
#: looks whether the object was abandoned).
PART_STEP = 16 * 1024 * 1024


class _mapped_os_errors:  # used as a function: ``with _mapped_os_errors(what):``
    """Translate ``OSError`` into :mod:`dmg.errors` at the connector boundary.

    A class, not a ``@contextmanager``: it wraps several calls per file copied, and a
    generator-based context manager cost several microseconds each time."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is None or not isinstance(exc, OSError):
            return  # DmgError and every other exception pass through unchanged
        what = self.what
        if isinstance(exc, FileNotFoundError):
            raise NotFound(f"{what}: no such file or directory") from exc
        if isinstance(exc, PermissionError):
            raise PermissionDenied(f"{what}: permission denied") from exc
        if exc.errno in {errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EIO,
                         errno.ESTALE, errno.EHOSTDOWN, errno.ENETUNREACH}:
            raise Retryable(f"{what}: {os.strerror(exc.errno)}") from exc
        raise Fatal(f"{what}: {exc.strerror or exc}") from exc


#: Flags of a staging file: a link planted at its name is refused (ELOOP), not followed.
_STAGING_FLAGS = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
_SOURCE_FLAGS = os.O_RDONLY | os.O_CLOEXEC


class _FileWriter(StagedWriter, StagedCrc32, KernelCopyIn):
    """The staging file, written through its descriptor (no Python file object: a small
    file's bytes go in one call, or none when the kernel copies them)."""

    def __init__(self, target: str, staging: str, *, fsync: bool) -> None:
        super().__init__(f"cannot write {target}")
        self._target = target
        self._staging = staging
        self._fsync = fsync
        self._copied = -1  # bytes copy_in put in the staging file (-1: written otherwise)
        with _mapped_os_errors(self.what):
            self._fd = os.open(staging, _STAGING_FLAGS, 0o666)  # closed in commit/abort

    def _write(self, chunk: bytes) -> None:
        with _mapped_os_errors(self.what):
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view):]

    def staged_crc32(self) -> int:
        """CRC-32 of the staging file as written so far, re-read from disk before commit.

        The copy engine compares it with the CRC-32 of the bytes it sent
        (:mod:`dmg.transfer.checksums`), so a bad write is never renamed into place.
        CRC-32 rather than MD5: the re-read costs a fraction of the copy.
        """
        if self.state != "open":
            raise Fatal(f"{self.what}: staged_crc32 after {self.state}")
        crc = 0
        with _mapped_os_errors(f"cannot re-read the staging file of {self._target}"):
            offset = 0
            while chunk := os.pread(self._fd, 1024 * 1024, offset):
                crc = zlib.crc32(chunk, crc)
                offset += len(chunk)
        return crc

    def copy_in(self, source: int, *, size: int, on_step: Callable[[int], None]) -> tuple[str, int]:
        """The kernel fills the staging file (:func:`dmg.connectors.localcopy.copy_fd`) from
        the open file ``source`` (the caller's); the source's XXH3 is taken from it, in a
        thread of its own for a large file (overlapping the copy), so every byte is read
        twice: once by the kernel, once by the hash."""
        if self.state != "open":
            raise Fatal(f"{self.what}: copy_in after {self.state}")
        try:
            with _mapped_os_errors(f"cannot copy to {self._target}"):
                if size < localcopy.THREADED_HASH_FROM:
                    copied = self._copied = localcopy.copy_fd(source, self._fd, size, on_step=on_step)
                    source_hash, _n = localcopy.xxh3_of_fd(source, size)
                    return source_hash, copied
                with ThreadPoolExecutor(1, thread_name_prefix="dmg-xxh3") as hasher:
                    pending = hasher.submit(localcopy.xxh3_of_fd, source, size)
                    try:
                        copied = self._copied = localcopy.copy_fd(source, self._fd, size, on_step=on_step)
                    finally:
                        source_hash, _n = pending.result()
                return source_hash, copied
        except BaseException:
            self.abort()
            raise

    def staged_xxh3(self) -> str:
        if self.state != "open":
            raise Fatal(f"{self.what}: staged_xxh3 after {self.state}")
        with _mapped_os_errors(f"cannot re-read the staging file of {self._target}"):
            if 0 <= self._copied < localcopy.HASH_BUFFER:  # a small file: one pread, no fstat
                return localcopy.xxh3_of_own_small(self._fd, self._copied)
            return localcopy.xxh3_of_own_range(self._fd)[0]

    def _commit(self, mtime: float | None) -> None:
        with _mapped_os_errors(f"cannot commit {self._target}"):
            if self._fsync:
                os.fsync(self._fd)
            if mtime is not None:
                os.utime(self._fd, (mtime, mtime))
            fd, self._fd = self._fd, -1
            os.close(fd)
            os.replace(self._staging, self._target)

    def _abort(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._staging)


@functools.lru_cache(maxsize=256)
def _absolute_root(location: str) -> tuple[Path, str]:
    """An absolute location's root path and its text with one trailing slash: pure text work
    (no file system call), made once per location and process, not once per shard."""
    root = Path(location)
    return root, str(root).rstrip("/") + "/"


class FileConnector(Connector, RangedRead, KeepsMtime, DistributedWrite, KernelRangeWrite, LocalFiles):
    type = "file"
    parallel_ranges = False  # one stream with read-ahead is as fast on a local disk

    def __init__(self, spec: StoreSpec) -> None:
        super().__init__(spec)
        location = spec.location
        if location.startswith("file://"):
            location = location[len("file://"):]
        if not location:
            raise BadInput(f"store {spec.name!r}: location is empty")
        if location.startswith("/"):  # the same for every connector of this process
            self.root, self._root_slash = _absolute_root(location)
        else:  # relative to the working folder, or under ~: as they are now
            self.root = Path(location).expanduser().absolute()
            self._root_slash = str(self.root).rstrip("/") + "/"
        self._fsync = bool(spec.options.get("fsync", False))
        self._real_root: str | None = None  # resolved on first use, then kept
        #: Folders (relative, normalized) known to exist inside the root with no link
        #: out: a shard's files resolve and stage without a realpath or mkdir each.
        self._known_dirs: set[str] = set()  # relative, "" for the root

    # -- paths ------------------------------------------------------------------
    def resolve(self, path: str) -> Path:
        """The absolute path of ``path`` inside the root; refuses any escape.

        The root's real path is resolved once per connector (one per shard), and a
        folder once checked is remembered: a file in a known folder that is not
        itself a link costs one ``lstat``, not a ``realpath`` of every component.
        """
        known = self._in_known_dir(path)
        if known is not None and not os.path.islink(known):
            return Path(known)
        return self._checked(path)

    def _in_known_dir(self, path: str) -> str | None:
        """The OS path of ``path`` when its folder is known to be inside the root (no link
        out) and its name is a plain one, unchecked for being a link itself; else None."""
        rel = path.replace("\\", "/").strip("/")
        folder, _slash, name = rel.rpartition("/")
        if folder in self._known_dirs and name not in ("", ".", ".."):
            return self._root_slash + rel
        return None

    def _checked(self, path: str) -> Path:
        """``path`` resolved component by component (its folder remembered when it exists)."""
        rel = path.replace("\\", "/").strip("/")
        folder = rel.rpartition("/")[0]
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise PermissionDenied(
                f"path {path!r} is outside store {self.spec.name!r}",
                hint="use a path relative to the store's location, without '..'",
            )
        candidate = self.root.joinpath(*parts)
        if self._real_root is None:
            self._real_root = os.path.realpath(self.root)
        real_root = self._real_root
        real = os.path.realpath(candidate)
        if real != real_root and not real.startswith(real_root + os.sep):
            raise PermissionDenied(
                f"path {path!r} is outside store {self.spec.name!r} (it leads to {real})",
                hint="symbolic links out of a store's root are not followed",
            )
        if parts and rel == "/".join(parts) and os.path.isdir(os.path.dirname(real)) \
                and os.path.dirname(real) == os.path.realpath(candidate.parent):
            self._known_dirs.add(folder)
        return candidate

    def local_file(self, path: str) -> str:
        known = self._in_known_dir(path)
        if known is not None and not os.path.islink(known):
            return known
        return str(self._checked(path))

    def open_local(self, path: str) -> int:
        """In a known folder, opened without following a link at the name (``O_NOFOLLOW``:
        no ``lstat`` before the open, and no window between a check and the open); a link
        there, or a file elsewhere, goes the long way (:meth:`local_file`)."""
        what = f"cannot read {path!r} in store {self.spec.name!r}"
        known = self._in_known_dir(path)
        if known is not None:
            with _mapped_os_errors(what):
                try:
                    return os.open(known, _SOURCE_FLAGS | os.O_NOFOLLOW)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:  # ELOOP: a link, checked below
                        raise
        with _mapped_os_errors(what):
            return os.open(self.local_file(path), _SOURCE_FLAGS)

    def operations_wait(self) -> bool:
        """False when the root is on a local file system (:mod:`dmg.connectors.mounts`)."""
        return mounts.waits_on_network(str(self.root))

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- primitives ---------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[Entry]:
        start = self.resolve(prefix)
        with _mapped_os_errors(f"cannot list {start}"):
            if start.is_file():
                yield self._entry(start)
                return
            if not start.is_dir():
                raise NotFound(
                    f"{prefix or '/'} does not exist in store {self.spec.name!r} ({start})"
                )
            relative = self._relative(start)
            yield from self._walk(str(start), "" if relative == "." else relative + "/")

    def _walk(self, directory: str, relative: str) -> Iterator[Entry]:
        """Entries under ``directory`` (``relative`` to the root, with its trailing slash),
        by name; strings and the scandir entries' own stat, no Path per file."""
        with os.scandir(directory) as it:
            items = sorted(it, key=lambda e: e.name)
        for item in items:
            if item.name.startswith(STAGING_PREFIX):
                continue
            path = relative + item.name
            if item.is_symlink():
                self.resolve(path)  # refuses links out of the root
            if item.is_dir():
                yield from self._walk(item.path, path + "/")
            elif item.is_file():
                st = item.stat()
                yield Entry(path, st.st_size, st.st_mtime)

    def _entry(self, path: Path) -> Entry:
        st = path.stat()
        return Entry(self._relative(path), st.st_size, st.st_mtime)

    def stat(self, path: str) -> Entry:
        known = self._in_known_dir(path)
        if known is not None:  # one lstat: a link goes the long way below
            with _mapped_os_errors(f"cannot stat {path!r} in store {self.spec.name!r}"):
                try:
                    st = os.lstat(known)
                except FileNotFoundError:
                    raise NotFound(f"{path!r} is not a file in store {self.spec.name!r}") from None
            if stat_mode.S_ISREG(st.st_mode):
                return Entry(known[len(self._root_slash):], st.st_size, st.st_mtime)
            if not stat_mode.S_ISLNK(st.st_mode):
                raise NotFound(f"{path!r} is not a file in store {self.spec.name!r}")
        target = self.resolve(path)
        with _mapped_os_errors(f"cannot stat {path!r} in store {self.spec.name!r}"):
            if not target.is_file():
                raise NotFound(f"{path!r} is not a file in store {self.spec.name!r}")
            return self._entry(target)

    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        target = self.resolve(path)
        with _mapped_os_errors(f"cannot read {path!r} in store {self.spec.name!r}"):
            fh = open(target, "rb")  # noqa: SIM115 - the caller closes it
            if offset:
                fh.seek(offset)
            return fh

    def open_range(self, path: str, *, offset: int, length: int) -> BinaryIO:
        """At most ``length`` bytes from ``offset``: the file, positioned, behind a limit."""
        fh = self.open_read(path, offset=offset)

        def chunks() -> Iterator[bytes]:
            left = length
            while left > 0 and (data := fh.read(min(1024 * 1024, left))):
                left -= len(data)
                yield data

        what = f"cannot read {path!r} in store {self.spec.name!r}"
        return buffered(ChunkStream(chunks(), lambda: _mapped_os_errors(what), on_close=fh.close))

    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        known = self._in_known_dir(path)
        if known is not None and not os.path.islink(known):
            folder, _slash, name = known.rpartition("/")
            return _FileWriter(known, f"{folder}/{STAGING_PREFIX}{staging_id}.{name}", fsync=self._fsync)
        target = self.resolve(path)
        if not target.name:
            raise BadInput(f"cannot write to the root of store {self.spec.name!r}")
        staging = target.with_name(f"{STAGING_PREFIX}{staging_id}.{target.name}")
        if path.replace("\\", "/").strip("/").rpartition("/")[0] not in self._known_dirs:
            with _mapped_os_errors(f"cannot write {target}"):
                target.parent.mkdir(parents=True, exist_ok=True)
            self.resolve(path)  # the new folders are inside the root: remember them
        return _FileWriter(str(target), str(staging), fsync=self._fsync)

    def delete(self, path: str) -> None:
        target = self.resolve(path)
        with _mapped_os_errors(f"cannot delete {path!r}"):
            target.unlink(missing_ok=True)

    def check_reachable(self) -> None:
        with _mapped_os_errors(f"store {self.spec.name!r} at {self.root}"):
            if not self.root.exists():
                raise NotFound(
                    f"store {self.spec.name!r}: {self.root} does not exist on this node",
                    hint="create it, or mount the share at the same path on every node",
                )
            if not self.root.is_dir():
                raise BadInput(f"store {self.spec.name!r}: {self.root} is not a directory")

    # -- distributed_write ------------------------------------------------------------
    def _distributed_staging(self, path: str, handle: dict[str, Any]) -> tuple[Path, Path]:
        target = self.resolve(path)
        name = str(handle.get("staging", ""))
        if not name.startswith(STAGING_PREFIX) or "/" in name or not target.name:
            raise BadInput(f"store {self.spec.name!r}: bad distributed-write handle for {path!r}")
        return target, target.with_name(name)

    def begin_distributed(self, path: str, *, size: int) -> dict[str, Any]:
        """Create the staging file at ``size`` bytes: ``{"staging": <file name>}``."""
        target = self.resolve(path)
        if not target.name:
            raise BadInput(f"cannot write to the root of store {self.spec.name!r}")
        handle = {"staging": f"{STAGING_PREFIX}dw-{uuid.uuid4().hex[:16]}.{target.name}"}
        _target, staging = self._distributed_staging(path, handle)
        with _mapped_os_errors(f"cannot write {target}"):
            staging.parent.mkdir(parents=True, exist_ok=True)
            with open(staging, "wb") as fh:
                fh.truncate(size)
        return handle

    def write_range(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                    chunks: Iterable[bytes], length: int) -> dict[str, Any]:
        """Write the part in place -> ``{"part_number", "md5"}`` (MD5 re-read from disk)."""
        target, staging = self._distributed_staging(path, handle)
        what = f"cannot write {target} (part {part_number})"
        with _mapped_os_errors(what):
            fd = os.open(staging, os.O_WRONLY)  # no O_CREAT: an aborted write stays aborted
            try:
                position = offset
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.pwrite(fd, view, position)
                        position += written
                        view = view[written:]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if position - offset != length:
                raise Fatal(f"{what}: {position - offset} bytes, expected {length}",
                            hint="the source changed while it was copied; run it again")
            digest = hashlib.md5(usedforsecurity=False)
            with open(staging, "rb") as fh:
                fh.seek(offset)
                left = length
                while left > 0 and (data := fh.read(min(left, 1024 * 1024))):
                    digest.update(data)
                    left -= len(data)
        return {"part_number": int(part_number), "md5": digest.hexdigest()}

    def copy_range_in(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                      length: int, source_file: str, on_step: Callable[[int], None]) -> str:
        """The kernel copies the range into the staging file in place
        (:func:`~dmg.connectors.localcopy.copy_range`, fsync'd when the store's ``fsync``
        option is on) while a thread hashes the source range (XXH3) -> that hash."""
        target, staging = self._distributed_staging(path, handle)
        what = f"cannot write {target} (part {part_number})"
        with _mapped_os_errors(what):
            src = os.open(source_file, os.O_RDONLY)
            try:
                dst = os.open(staging, os.O_WRONLY)  # no O_CREAT: an aborted write stays aborted
                try:
                    with ThreadPoolExecutor(1, thread_name_prefix="dmg-xxh3") as hasher:
                        pending = hasher.submit(localcopy.xxh3_of_range, src, offset, length)
                        try:
                            copied = localcopy.copy_range(src, dst, offset, length, step=PART_STEP,
                                                          on_step=on_step)
                        finally:
                            source_hash, hashed = pending.result()
                    if self._fsync:
                        os.fsync(dst)
                finally:
                    os.close(dst)
            finally:
                os.close(src)
        if copied != length or hashed != length:
            raise Fatal(f"{what}: {min(copied, hashed)} bytes, expected {length}",
                        hint="the source changed while it was copied; run it again")
        return source_hash

    def range_xxh3(self, path: str, handle: dict[str, Any], *, offset: int, length: int) -> str:
        target, staging = self._distributed_staging(path, handle)
        with _mapped_os_errors(f"cannot re-read the staging file of {target}"):
            fd = os.open(staging, os.O_RDONLY)
            try:
                return localcopy.xxh3_of_own_range(fd, offset, length)[0]
            finally:
                os.close(fd)

    def commit_distributed(self, path: str, handle: dict[str, Any], parts: Sequence[dict[str, Any]], *,
                           size: int) -> None:
        """Rename the staging file over the target; idempotent (see the module docstring)."""
        target, staging = self._distributed_staging(path, handle)
        with _mapped_os_errors(f"cannot commit {target}"):
            try:
                if staging.stat().st_size != size:
                    raise Fatal(f"cannot commit {target}: its staging file has "
                                f"{staging.stat().st_size} bytes, expected {size}",
                                hint="run the activity again")
            except FileNotFoundError:
                if target.is_file() and target.stat().st_size == size:
                    return  # committed before
                raise
            if self._fsync:
                fd = os.open(staging, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(staging, target)

    def abort_distributed(self, path: str, handle: dict[str, Any]) -> None:
        """Delete the staging file (missing: nothing to do)."""
        _target, staging = self._distributed_staging(path, handle)
        with _mapped_os_errors(f"cannot abort the write of {path!r}"):
            staging.unlink(missing_ok=True)

    def cleanup_staging(self, staging_id: str, *, targets: Sequence[str] = ()) -> int:
        """Staging files are named by staging id beside their target: with ``targets`` only
        those are removed; without, the whole store is searched."""
        removed = 0
        marker = f"{STAGING_PREFIX}{staging_id}."
        if targets:
            for path in targets:
                target = self.resolve(path)
                staged = target.with_name(f"{marker}{target.name}")
                with _mapped_os_errors(f"cannot remove {staged}"):
                    if staged.is_file():
                        staged.unlink(missing_ok=True)
                        removed += 1
            return removed
        if not self.root.is_dir():
            return 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(marker):
                    Path(dirpath, name).unlink(missing_ok=True)
                    removed += 1
        return removed
