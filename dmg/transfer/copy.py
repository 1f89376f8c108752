"""Copy a shard's files from one connector to another.

Streams with bounded memory (one chunk per file in flight), computes an MD5 while
streaming, writes to the sink's staging place and commits each file only while
``may_commit()`` says this attempt is still current. A failed or fenced file is
aborted: nothing half-written is ever visible.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from dmg.connectors.base import Connector, Entry
from dmg.errors import DmgError, StaleAttempt

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024


@dataclass
class FileResult:
    path: str
    bytes: int
    checksum: str
    status: str  # "copied" | "failed"
    error: str = ""


@dataclass
class ShardResult:
    files: list[FileResult] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files if f.status == "copied")

    @property
    def copied(self) -> int:
        return sum(1 for f in self.files if f.status == "copied")

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {"files": [asdict(f) for f in self.files], "started": self.started,
                "ended": self.ended, "bytes": self.bytes, "copied": self.copied}


def sink_path_for(entry_path: str, *, source_prefix: str, sink_prefix: str) -> str:
    """Map a source path under ``source_prefix`` to its place under ``sink_prefix``."""
    src = source_prefix.strip("/")
    rel = entry_path.strip("/")
    if src and rel != src and rel.startswith(src + "/"):
        rel = rel[len(src) + 1:]
    elif src and rel == src:  # the source is a single file
        rel = rel.rsplit("/", 1)[-1]
    dst = sink_prefix.strip("/")
    return f"{dst}/{rel}" if dst else rel


class _Throttle:
    """Sleeps so that the average rate stays under ``rate`` bytes/s (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def account(self, n: int) -> None:
        if self.rate <= 0:
            return
        self.sent += n
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def copy_entries(
    source: Connector,
    sink: Connector,
    entries: Sequence[Entry],
    *,
    source_prefix: str,
    sink_prefix: str,
    staging_id: str,
    may_commit: Callable[[], bool] = lambda: True,
    on_file: Callable[[FileResult], None] | None = None,
    bandwidth: float = 0,
) -> ShardResult:
    """Copy every entry; returns one :class:`FileResult` per entry.

    Raises :class:`StaleAttempt` (after aborting the file in hand) as soon as
    ``may_commit()`` turns false. Other :class:`DmgError` s fail the file, not the
    shard; the caller decides whether a failed file fails the shard.
    """
    result = ShardResult(started=time.time())
    throttle = _Throttle(bandwidth)
    for entry in entries:
        target = sink_path_for(entry.path, source_prefix=source_prefix, sink_prefix=sink_prefix)
        outcome = _copy_one(source, sink, entry, target, staging_id=staging_id,
                            may_commit=may_commit, throttle=throttle)
        result.files.append(outcome)
        if on_file is not None:
            on_file(outcome)
    result.ended = time.time()
    return result


def _copy_one(source: Connector, sink: Connector, entry: Entry, target: str, *,
              staging_id: str, may_commit: Callable[[], bool], throttle: _Throttle) -> FileResult:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        writer = sink.open_write(target, staging_id=staging_id)
    except DmgError as exc:
        return FileResult(target, 0, "", "failed", str(exc))
    try:
        with source.open_read(entry.path) as reader:
            while chunk := reader.read(CHUNK_SIZE):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
                throttle.account(len(chunk))
        if size != entry.size:
            raise DmgError(f"{entry.path}: read {size} bytes, the listing said {entry.size}")
        if not may_commit():
            raise StaleAttempt(f"{entry.path}: a newer attempt of this shard exists; not committed")
        writer.commit(mtime=entry.mtime)
    except StaleAttempt:
        writer.abort()
        raise
    except DmgError as exc:
        writer.abort()
        log.warning("copy failed path=%s error=%s", entry.path, exc)
        return FileResult(target, size, digest.hexdigest(), "failed", str(exc))
    except BaseException:
        writer.abort()
        raise
    return FileResult(target, size, digest.hexdigest(), "copied")
