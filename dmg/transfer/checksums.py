"""Checksums: MD5 computed while streaming, and the checks made against it.

Before a file is committed (a mismatch aborts it: nothing becomes visible):

- the streamed size against the listed size (when known, i.e. not ``-1``);
- the streamed MD5 against the source's native checksum (``Entry.checksum``:
  an S3 ETag that is an MD5, an Azure Content-MD5);
- the streamed MD5 against the bytes the sink staged, for writers that can
  re-read their staging cheaply: a :class:`~dmg.connectors.base.StagedWriter`
  with a ``staged_md5() -> str | None`` method (the ``file`` store's staging file).

After commit (``verify=auto``): the sink's native checksum, for sinks announcing
``native_checksum`` whose entry carries one (S3 single-part uploads, Azure blobs);
``verify=re-read`` also re-reads the committed object. A mismatch found after
commit deletes the object and fails the file. S3 (``Content-MD5`` on every
part) and Azure (``validate_content`` on every block) check each request body
before anything is committed, so that path catches only a sink's own bug.

What was checked is recorded per file (``FileResult.verified``): ``size``,
``source-md5``, ``staged-md5``, ``sink-md5``, ``re-read``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from dmg.connectors.base import Connector
from dmg.errors import Fatal

CHUNK = 1024 * 1024


class ChecksumMismatch(Fatal):
    """The bytes copied are not the bytes expected; the file was not committed."""


def new_md5() -> Any:
    return hashlib.md5(usedforsecurity=False)


def staged_md5(writer: Any) -> str | None:
    """The MD5 the sink's writer reports for its staged bytes, or None if it cannot tell."""
    method = getattr(writer, "staged_md5", None)
    if method is None:
        return None
    value = method()
    return str(value).lower() if value else None


def md5_of(connector: Connector, path: str) -> tuple[str, int]:
    """(MD5 hex, size) of ``path`` read back from ``connector``."""
    digest = new_md5()
    size = 0
    with connector.open_read(path) as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_equal(what: str, expected: str, actual: str, *, path: str) -> None:
    """Raise :class:`ChecksumMismatch` when two MD5s differ (case-insensitive)."""
    if expected.lower() != actual.lower():
        raise ChecksumMismatch(f"{path}: checksum mismatch ({what}: expected {expected}, got {actual})",
                               hint="the file was not committed; check the source and network, then re-run")
