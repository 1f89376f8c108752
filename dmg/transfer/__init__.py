"""The copy engine, written once over any two connectors (see :mod:`dmg.transfer.engine`).

Modules: :mod:`.engine` (files of a shard), :mod:`.options` (an activity's
options), :mod:`.filters` (include/exclude globs), :mod:`.compare` (incremental
skip), :mod:`.checksums` (verification), :mod:`.throttle` and
:mod:`.sitebandwidth` (bandwidth limit), :mod:`.retry`, :mod:`.parts` (chunked
and ranged reads), :mod:`.report` (per-file results), :mod:`.paths`.
"""

from dmg.transfer.engine import CopyEngine, copy_entries
from dmg.transfer.filters import PathFilter
from dmg.transfer.options import CopyOptions
from dmg.transfer.paths import relative_path, sink_path_for
from dmg.transfer.report import COPIED, FAILED, SKIPPED, FileResult, ShardResult
from dmg.transfer.throttle import LocalBandwidth, Throttle

__all__ = ["COPIED", "FAILED", "SKIPPED", "CopyEngine", "CopyOptions", "FileResult", "LocalBandwidth",
           "PathFilter", "ShardResult", "Throttle", "copy_entries", "relative_path", "sink_path_for"]
