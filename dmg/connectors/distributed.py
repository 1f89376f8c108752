"""The optional capability ``distributed_write``: one object written from several nodes.

A sink that is a :class:`DistributedWrite` (flag ``distributed_write``)
implements its four methods. One very large object
is then written in ranges (parts) by shards that may run on different nodes,
and made visible once, by a single commit:

- :meth:`~DistributedWrite.begin_distributed` opens the write once, on the
  dispatcher, and returns a small JSON *handle* (S3: the multipart upload id;
  Azure: a block-id prefix; file: the name of a staging file of the final size
  beside the target). The handle is all a node needs to write a part.
- :meth:`~DistributedWrite.write_range` writes ``length`` bytes at ``offset`` as
  part ``part_number`` (1-based, in offset order) and returns the part's result
  (JSON; S3: ``etag``; Azure: ``block_ids``; every sink may add ``md5``, the hex
  MD5 of the bytes as the sink stored them). **Idempotent**: writing the same part
  again (a re-run after a crash, on any node) replaces it with the same bytes.
  Nothing is visible before the commit.
- :meth:`~DistributedWrite.commit_distributed` makes the object visible from the
  parts' results, sorted by part number. **Idempotent**: committing an object
  already committed from these parts is a no-op (S3: the upload is gone but the
  object has the expected size; Azure: the same block list; file: the staging
  file is gone and the target has the expected size).
- :meth:`~DistributedWrite.abort_distributed` drops whatever was written; safe to
  call twice or after a commit of another handle.

Every method raises only :mod:`dmg.errors` exceptions. Who calls what, and how a
single commit is guaranteed across nodes, is :mod:`dmg.site.splits` and
:mod:`workers.run.part`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dmg.connectors.base import Connector
from dmg.connectors.capabilities import DistributedWrite

__all__ = ["DistributedWrite", "PartResult", "distributed_writer", "sorted_parts"]

#: A part's result as :meth:`DistributedWrite.write_range` returns it, plus ``part_number``.
PartResult = dict[str, Any]


def distributed_writer(connector: Connector) -> DistributedWrite | None:
    """``connector`` as a :class:`DistributedWrite` when it is one, else None."""
    return connector if isinstance(connector, DistributedWrite) else None


def sorted_parts(parts: Iterable[PartResult]) -> list[PartResult]:
    """Parts by ``part_number``; a number listed twice keeps the last result."""
    by_number = {int(p["part_number"]): p for p in parts}
    return [by_number[n] for n in sorted(by_number)]
