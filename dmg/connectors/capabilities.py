"""What a store can do beyond the primitives of :class:`~dmg.connectors.base.Connector`.

A capability is a type: a connector has it by inheriting its class here and, where
the class has abstract methods, implementing them (a class that announces a
capability without the code behind it cannot be instantiated). The flags in
:attr:`Connector.capabilities` are derived from these types (:func:`flags_of`, after
rclone's ``Features.Fill``), never written by hand, so a flag and the code cannot
disagree. Callers test the type (``isinstance(store, RangedRead)``), not the flag.

===================  ====================  ==============================================
flag                 type                  used by
===================  ====================  ==============================================
``ranged_read``      :class:`RangedRead`   parallel parts of a large file (engine), part
                                           shards of a split object, split planning
``server_side_copy`` :class:`ServerSideCopy`  the engine: copy inside the store, no bytes
                                           through the node
``keeps_mtime``      :class:`KeepsMtime`   incremental compare: equal mtimes mean equal
``native_checksum``  :class:`NativeChecksum`  the engine: the sink's MD5 checked after commit
``distributed_write`` :class:`DistributedWrite`  split objects (:mod:`dmg.connectors.distributed`)
``local_files``      :class:`LocalFiles`   the engine: file → file copied by the kernel;
                                           small files copied without threads when
                                           neither store's operations wait
===================  ====================  ==============================================

Writers (:class:`~dmg.connectors.base.StagedWriter`) may be :class:`StagedCrc32`:
the engine then compares the staged bytes with what it sent before committing; and
:class:`KernelCopyIn`: the engine then has the kernel fill the staging file from a
:class:`LocalFiles` source and compares the XXH3 of both sides before committing.
A :class:`DistributedWrite` sink may be a :class:`KernelRangeWrite`: a part of a split
object from a :class:`LocalFiles` source is then copied by the kernel into the write,
and the XXH3 of the source range and of the written range must be equal
(:mod:`workers.run.part`); or a :class:`FileRangeWrite`: such a part is then read from the
file once, in large blocks, and sent as it is with a checksum the store checks on receipt
(S3: ``x-amz-checksum-crc32``), no checksum of the node's own beside it. A writer that
is a :class:`FileUpload` takes a local file of a :class:`LocalFiles` source whole, up to
its cutoff: one request at commit, streamed from the file, checked by the service against
a checksum of the file (:mod:`dmg.connectors.fileupload`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

if TYPE_CHECKING:
    from dmg.connectors.base import Connector, Entry


class RangedRead(abc.ABC):
    """Reads a byte range of an object in one request."""

    #: Reading several ranges of one object at once beats one stream (an object store
    #: over HTTP); False where one sequential stream is as fast (a local disk).
    parallel_ranges: ClassVar[bool] = True

    @abc.abstractmethod
    def open_range(self, path: str, *, offset: int, length: int) -> BinaryIO:
        """At most ``length`` bytes of ``path`` from ``offset`` (fewer at the end of the
        object, none past it); ``NotFound`` when the object does not exist."""


class ServerSideCopy(abc.ABC):
    """Copies an object of another store inside the storage service, without the bytes
    passing through the node."""

    #: Objects larger than this are streamed (S3: one CopyObject request takes 5 GiB).
    max_server_side_copy: ClassVar[int] = 5 * 1024**3

    @abc.abstractmethod
    def can_copy_from(self, source: Connector) -> bool:
        """Whether :meth:`copy_from` works with ``source`` (same service, endpoint and keys)."""

    @abc.abstractmethod
    def copy_from(self, source: Connector, source_path: str, target_path: str) -> Entry:
        """Copy ``source_path`` of ``source`` to ``target_path`` in one atomic request: the
        target appears whole or not at all. Returns the target's entry."""


class KeepsMtime:
    """The modified time given to :meth:`StagedWriter.commit` is stored and listed back
    (within a second), so equal size and mtime mean an unchanged file."""


class NativeChecksum:
    """:attr:`Entry.checksum`, when not None, is the MD5 of the stored bytes as the
    service computed it (S3 single-part ETags, Azure's Content-MD5)."""


class DistributedWrite(abc.ABC):
    """One object written in parts from several nodes, visible after one commit
    (the contract in full: :mod:`dmg.connectors.distributed`)."""

    @abc.abstractmethod
    def begin_distributed(self, path: str, *, size: int) -> dict[str, Any]:
        """Open the write once; returns a small JSON handle every part needs."""

    @abc.abstractmethod
    def write_range(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                    chunks: Iterable[bytes], length: int) -> dict[str, Any]:
        """Write ``length`` bytes at ``offset`` as part ``part_number``; idempotent."""

    @abc.abstractmethod
    def commit_distributed(self, path: str, handle: dict[str, Any], parts: Sequence[dict[str, Any]], *,
                           size: int) -> None:
        """Make the object visible from the parts' results; idempotent."""

    @abc.abstractmethod
    def abort_distributed(self, path: str, handle: dict[str, Any]) -> None:
        """Drop what was written; safe twice or after another handle's commit."""


class StagedCrc32(abc.ABC):
    """A writer that can re-read its staged bytes before commit."""

    @abc.abstractmethod
    def staged_crc32(self) -> int:
        """CRC-32 of the bytes staged so far, read back from where they are staged."""


class LocalFiles(abc.ABC):
    """Entries are files of this node's file system, readable by path."""

    @abc.abstractmethod
    def local_file(self, path: str) -> str:
        """The OS path of ``path`` (refusing an escape from the store as ``open_read`` does)."""

    @abc.abstractmethod
    def open_local(self, path: str) -> int:
        """A read-only descriptor of the file ``path`` (refusing an escape as
        :meth:`local_file` does); the caller closes it. Raises :mod:`dmg.errors`."""

    @abc.abstractmethod
    def operations_wait(self) -> bool:
        """Whether an operation on these files may wait on a network (a mounted share, or
        a file system not known to be local): the engine then overlaps files in threads;
        when neither store waits, it copies small files one after the other in the
        calling thread."""


class KernelCopyIn(abc.ABC):
    """A writer whose staging place is a local file the kernel can fill."""

    @abc.abstractmethod
    def copy_in(self, source: int, *, size: int, on_step: Callable[[int], None]) -> tuple[str, int]:
        """Stage the first ``size`` bytes of the open file ``source`` (a descriptor the
        caller closes: :meth:`LocalFiles.open_local`; fewer bytes if it is shorter), copied
        in the kernel; ``on_step(n)`` as bytes move (it may raise to stop).
        Returns (``xxh3:<hex>`` of the source as read, bytes staged)."""

    @abc.abstractmethod
    def staged_xxh3(self) -> str:
        """``xxh3:<hex>`` of the staged bytes, read back from the staging file."""


class FileUpload(abc.ABC):
    """A writer that can send a local file in one request at commit (S3 ``PutObject``,
    Azure ``Put Blob``), streamed from the file, with a checksum the service checks; above
    its cutoff, in parts (blocks) read from the file once each, each with its checksum."""

    @abc.abstractmethod
    def takes_file(self, size: int) -> bool:
        """Whether a file of ``size`` bytes goes in one request (at most the cutoff), and
        nothing was written to this writer yet."""

    @abc.abstractmethod
    def stage_file(self, source_file: str, *, size: int, on_step: Callable[[int], None]) -> tuple[str, str]:
        """Read the first ``size`` bytes of ``source_file`` once for their checksum,
        ``on_step(n)`` as bytes pass (it may raise to stop); ``Fatal`` if it is shorter.
        The commit sends the file with it, and fails (nothing visible) if the service's
        checksum of what it stored differs. Returns (the file's checksum: MD5 hex or
        ``crc32:<hex>``, the name of the check made at commit)."""


class KernelRangeWrite(abc.ABC):
    """A :class:`DistributedWrite` whose parts land in a local file the kernel can fill."""

    @abc.abstractmethod
    def copy_range_in(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                      length: int, source_file: str, on_step: Callable[[int], None]) -> str:
        """Write ``length`` bytes at ``offset`` of ``source_file`` at the same offset of the
        write, copied in the kernel; ``on_step(n)`` as bytes move (it may raise to stop).
        Idempotent, as :meth:`DistributedWrite.write_range`. Returns ``xxh3:<hex>`` of the
        source range as read; raises ``Fatal`` when the source has fewer bytes there."""

    @abc.abstractmethod
    def range_xxh3(self, path: str, handle: dict[str, Any], *, offset: int, length: int) -> str:
        """``xxh3:<hex>`` of ``length`` bytes at ``offset`` of the write, read back."""


class FileRangeWrite(abc.ABC):
    """A :class:`DistributedWrite` that sends a part straight from a local file, with a
    checksum the store computes from the bytes it receives and checks."""

    @abc.abstractmethod
    def send_file_range(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                        length: int, source_file: str, on_step: Callable[[int], None]) -> dict[str, Any]:
        """Read ``length`` bytes at ``offset`` of ``source_file`` once and send them as part
        ``part_number``; ``on_step(n)`` as bytes are read (it may raise to stop). Idempotent,
        as :meth:`DistributedWrite.write_range`, whose result it returns; the checksum the
        store checked is in it (``crc32``, or ``md5``). ``Fatal`` when the source has fewer
        bytes there."""


def flags_of(cls: type) -> frozenset[str]:
    """The capability flags of a connector class, from the types it inherits."""
    kinds: dict[str, type] = {"ranged_read": RangedRead, "server_side_copy": ServerSideCopy,
                              "keeps_mtime": KeepsMtime, "native_checksum": NativeChecksum,
                              "distributed_write": DistributedWrite, "local_files": LocalFiles}
    return frozenset(flag for flag, kind in kinds.items() if issubclass(cls, kind))
