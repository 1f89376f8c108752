"""The copy engine, written once over any two connectors."""

from dmg.transfer.copy import FileResult, ShardResult, copy_entries, sink_path_for

__all__ = ["FileResult", "ShardResult", "copy_entries", "sink_path_for"]
