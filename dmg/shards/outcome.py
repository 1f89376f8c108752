"""The shard outcome: what a runner returns for one attempt, and what its Celery task returns.

:class:`ShardOutcome` is built by :func:`workers.run.shard.run_shard`;
:meth:`ShardOutcome.task_result` is the Celery task's return value (the result
backend keeps it: ``{status, node, attempt, files, bytes}``, as earlier versions
returned). ``status`` is one of :data:`dmg.shards.status.OUTCOMES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dmg.errors import Fatal
from dmg.shards.status import OUTCOMES


class MalformedOutcome(Fatal):
    """A shard outcome that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class ShardOutcome:
    status: str  # one of OUTCOMES
    node: str
    attempt: int
    shard_id: str
    files: int = 0
    bytes: int = 0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def task_result(self) -> dict[str, Any]:
        """The Celery task's return value (no shard id: the task id names it; no error: a
        failed task raises it)."""
        return {"status": self.status, "node": self.node, "attempt": self.attempt,
                "files": self.files, "bytes": self.bytes}

    @classmethod
    def from_json(cls, raw: object) -> ShardOutcome:
        """Read :meth:`to_json` (or a task result, with ``shard_id`` given in it or not).
        Raises :class:`MalformedOutcome`."""
        if not isinstance(raw, Mapping):
            raise MalformedOutcome(
                f"shard outcome is malformed (expected an object, got {type(raw).__name__})")
        try:
            outcome = cls(str(raw["status"]), str(raw["node"]), int(raw["attempt"]),
                          str(raw.get("shard_id", "")), int(raw.get("files", 0)), int(raw.get("bytes", 0)),
                          str(raw.get("error", "")))
        except KeyError as exc:
            raise MalformedOutcome(f"shard outcome is malformed (missing field {exc})") from exc
        except (TypeError, ValueError) as exc:
            raise MalformedOutcome(f"shard outcome is malformed ({type(exc).__name__}: {exc})") from exc
        if outcome.status not in OUTCOMES:
            raise MalformedOutcome(f"shard outcome is malformed (unknown status {outcome.status[:40]!r}; "
                                   f"expected one of {', '.join(OUTCOMES)})")
        return outcome
