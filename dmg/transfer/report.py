"""What the engine says about each file and each shard.

A :class:`FileResult` is one line of the per-file report: the sink ``path`` and
the ``source`` path, ``bytes`` (the file's size; for a skipped file, the size it
has), the MD5 ``checksum`` (hex; streamed for a copied file, known or empty for
a skipped one), ``status`` (``copied`` | ``skipped`` | ``failed``), ``error``
(why it failed or was skipped), ``verified`` (what was checked, comma-separated:
see :mod:`dmg.transfer.checksums`), ``tries`` and the times. The node and the
shard attempt are added by whoever runs the shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COPIED = "copied"
SKIPPED = "skipped"
FAILED = "failed"
FILE_STATUSES = (COPIED, SKIPPED, FAILED)


@dataclass
class FileResult:
    path: str
    bytes: int
    checksum: str
    status: str  # copied | skipped | failed
    error: str = ""
    source: str = ""
    verified: str = ""
    tries: int = 0
    started: float = 0.0
    ended: float = 0.0

    def to_json(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies every value, a cost paid per file.
        return {"path": self.path, "bytes": self.bytes, "checksum": self.checksum, "status": self.status,
                "error": self.error, "source": self.source, "verified": self.verified, "tries": self.tries,
                "started": self.started, "ended": self.ended}


@dataclass
class ShardResult:
    files: list[FileResult] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def _with(self, status: str) -> list[FileResult]:
        return [f for f in self.files if f.status == status]

    @property
    def bytes(self) -> int:
        """Bytes copied (skipped and failed files not counted)."""
        return sum(f.bytes for f in self._with(COPIED))

    @property
    def copied(self) -> int:
        return len(self._with(COPIED))

    @property
    def skipped(self) -> list[FileResult]:
        return self._with(SKIPPED)

    @property
    def failed(self) -> list[FileResult]:
        return self._with(FAILED)

    def to_json(self) -> dict[str, Any]:
        return {"files": [f.to_json() for f in self.files], "started": self.started,
                "ended": self.ended, "bytes": self.bytes, "copied": self.copied,
                "skipped": len(self.skipped), "failed": len(self.failed)}
