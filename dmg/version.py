"""dmg's version and how versions compare (gateway version = majority version)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dmg")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"


def parse(text: str) -> tuple[int, ...]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; non-numeric parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


def majority_version(versions: Iterable[str]) -> str | None:
    """The version most nodes run; ties go to the higher version. None if no node."""
    counts = Counter(versions)
    if not counts:
        return None
    return max(counts, key=lambda v: (counts[v], parse(v)))
