"""The dense wire form of a file result: a *row*, the values of :data:`ROW_FIELDS` in that
order (``[path, source, bytes, checksum, status, verified, error, tries, started, ended]``).

``POST /nodes/reports`` and ``POST /shards/{id}/files`` take a shard's file results as
``rows`` besides ``files`` (one object per file: the form earlier nodes send, still
taken, as during a rolling upgrade). A row holds 11 JSON values where a compact object holds
~19, and the cloud builds no object per row: one request carries ~1,800 results instead
of ~950, each parsed, checked and validated in about a third of the CPU.

Plain Python, so a node builds rows without importing the cloud's schemas (pydantic);
:class:`dmg.cloud.schemas.FileResults` validates them (a test keeps both in step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dmg.cloud.limits import FILE_RESULT_DEFAULTS

#: A row's values, in order: the fields of :class:`dmg.transfer.FileResult` the cloud keeps.
ROW_FIELDS = ("path", "source", "bytes", "checksum", "status", "verified", "error", "tries", "started",
              "ended")
#: Each field with the value a file result that leaves it out means (None for the two
#: fields every file result holds: ``path`` and ``status``).
_FIELD_DEFAULTS = tuple((name, FILE_RESULT_DEFAULTS.get(name)) for name in ROW_FIELDS)


def as_row(result: Mapping[str, Any]) -> list[Any]:
    """A file result (:class:`dmg.transfer.FileResult` JSON, in full or without the fields
    the cloud fills in) as a row; other keys (``node``, ``attempt``: the envelope's) are left out."""
    get = result.get
    return [get(name, default) for name, default in _FIELD_DEFAULTS]


def as_result(row: Sequence[Any]) -> dict[str, Any]:
    """A row as the object form (``files``), for a cloud that takes only that one."""
    return dict(zip(ROW_FIELDS, row, strict=True))
