"""The contract every store implements.

A connector overrides a few primitives; the transfer engine derives the rest
(see rclone's ``fs/types.go`` and fsspec's ``AbstractFileSystem``):

- :meth:`Connector.list` yields every object under a prefix, recursively, sorted by
  path. Paths are relative to the store's location, POSIX-style, never start
  with ``/`` and never contain ``..``.
- :meth:`Connector.stat` returns one :class:`Entry` or raises ``NotFound``.
- :meth:`Connector.open_read` returns a binary stream from ``offset``.
- :meth:`Connector.open_write` returns a :class:`StagedWriter`: bytes written go
  to a staging place that nobody sees; :meth:`StagedWriter.commit` makes the
  object visible atomically (rename, block-list commit, transaction), and
  :meth:`StagedWriter.abort` removes the staging place. Committing the same
  staging id twice is a no-op. A staging id is ``<shard id>.<attempt>``
  (:func:`dmg.ids.staging_id`); a sink that fences commits with a marker keys it by the
  shard part (:func:`dmg.ids.commit_key`), so that a shard replayed by a newer attempt
  commits each target at most once.
- :meth:`Connector.delete` removes an object; deleting a missing one is not an error.
- :meth:`Connector.check_reachable` raises a ``DmgError`` saying why this node
  cannot use the store.

Optional capabilities are types a connector inherits
(:mod:`dmg.connectors.capabilities`: ``RangedRead``, ``ServerSideCopy``,
``KeepsMtime``, ``NativeChecksum``, ``DistributedWrite``); :attr:`Connector.capabilities`
lists their flags, derived from the class. The engine falls back to streaming when
one is missing.

Every method raises only :mod:`dmg.errors` exceptions.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

from dmg.connectors.capabilities import flags_of
from dmg.errors import BadInput, Fatal


@dataclass(frozen=True)
class StoreSpec:
    """A store definition as the cloud holds it: never a secret."""

    name: str
    type: str
    location: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StoreSpec:
        missing = [k for k in ("name", "type", "location") if not body.get(k)]
        if missing:
            raise BadInput(
                f"store definition is missing {', '.join(missing)}",
                hint='a store needs {"name": ..., "type": "file", "location": ...}',
            )
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise BadInput("store options must be a JSON object")
        return cls(str(body["name"]), str(body["type"]), str(body["location"]), dict(options))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "location": self.location,
                "options": dict(self.options)}


@dataclass(frozen=True)
class Entry:
    """One object in a store."""

    path: str
    size: int
    mtime: float
    checksum: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime": self.mtime,
                "checksum": self.checksum}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Entry:
        return cls(str(body["path"]), int(body["size"]), float(body["mtime"]),
                   body.get("checksum"))


class StagedWriter(abc.ABC):
    """Bytes go to a hidden staging place until :meth:`commit`.

    The one state machine of every writer: ``open`` → ``committed`` | ``aborted``.
    Writing after either, or committing after an abort, is a ``Fatal`` error;
    committing twice and aborting twice (or after a commit) do nothing; a failure
    while writing or committing drops the staging place before it is raised.
    Subclasses implement :meth:`_write`, :meth:`_commit` and :meth:`_abort`, each
    called only while the writer is open.
    """

    def __init__(self, what: str) -> None:
        #: The message prefix of this writer's errors: ``cannot write 'x' in store 'y'``.
        self.what = what
        self.state = "open"

    def write(self, chunk: bytes) -> None:
        """Stage ``chunk`` after the bytes written before."""
        if self.state != "open":
            raise Fatal(f"{self.what}: write after {self.state}")
        try:
            self._write(chunk)
        except BaseException:
            self.abort()
            raise

    def commit(self, *, mtime: float | None = None) -> None:
        """Make the object visible under its final path, atomically; ``mtime`` is kept by
        sinks that are ``KeepsMtime``."""
        if self.state == "committed":
            return
        if self.state == "aborted":
            raise Fatal(f"{self.what}: commit after abort")
        try:
            self._commit(mtime)
        except BaseException:
            self.abort()
            raise
        self.state = "committed"

    def abort(self) -> None:
        """Drop the staging place; safe to call twice, after a commit or a failed write."""
        if self.state != "open":
            return
        self.state = "aborted"
        self._abort()

    @abc.abstractmethod
    def _write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    def _commit(self, mtime: float | None) -> None: ...

    @abc.abstractmethod
    def _abort(self) -> None: ...


class Connector(abc.ABC):
    """A store's primitives. Subclasses set :attr:`type` and implement the rest."""

    type: ClassVar[str] = ""
    #: The flags of the capability types the class inherits (set for every subclass).
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.capabilities = flags_of(cls)

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Every object at or under ``prefix``, recursively, sorted by path; ``NotFound``
        when a non-empty ``prefix`` matches nothing."""

    @abc.abstractmethod
    def stat(self, path: str) -> Entry:
        """The entry of one object; ``NotFound`` when there is none."""

    @abc.abstractmethod
    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        """A binary stream of the object from ``offset`` (empty at or past its end); the
        caller closes it. ``NotFound`` when the object does not exist."""

    @abc.abstractmethod
    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        """A writer whose bytes are invisible until its commit; ``BadInput`` for the store's
        root. ``staging_id`` names this attempt's staging place (:func:`dmg.ids.staging_id`)."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove an object; a missing one is not an error."""

    @abc.abstractmethod
    def check_reachable(self) -> None:
        """Return when this node can use the store; raise a ``DmgError`` saying why not."""

    def cleanup_staging(self, staging_id: str, *, targets: Sequence[str] = ()) -> int:
        """Remove staging leftovers of ``staging_id`` (a fenced attempt); returns the count.

        ``targets`` are the paths the attempt may have written. With them a connector
        looks only there, and may also remove what it can name by target alone
        (S3: every incomplete multipart upload of those keys): pass them only when
        no attempt of the shard is writing any more (its current attempt ended)."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and connections."""
