"""Where a source entry lands in the sink, and its path relative to the activity's source."""

from __future__ import annotations


def relative_path(entry_path: str, *, source_prefix: str) -> str:
    """``entry_path`` relative to ``source_prefix`` (the activity's source path).

    A single-file source (``entry_path == source_prefix``) gives the file's name.
    """
    src = source_prefix.strip("/")
    rel = entry_path.strip("/")
    if src and rel != src and rel.startswith(src + "/"):
        return rel[len(src) + 1:]
    if src and rel == src:
        return rel.rsplit("/", 1)[-1]
    return rel


def sink_path_for(entry_path: str, *, source_prefix: str, sink_prefix: str) -> str:
    """Map a source path under ``source_prefix`` to its place under ``sink_prefix``."""
    rel = relative_path(entry_path, source_prefix=source_prefix)
    dst = sink_prefix.strip("/")
    return f"{dst}/{rel}" if dst else rel
