"""The demo's data: a generated folder of random bytes, and a byte-for-byte comparison."""

from __future__ import annotations

import filecmp
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

_FOLDERS = ("reports", "images", "logs", "exports", "archive")


@dataclass(frozen=True)
class TreeStats:
    files: int
    bytes: int


def generate_tree(root: Path, *, small_files: int = 300, large_files: int = 4,
                  small_size: tuple[int, int] = (1 * KIB, 64 * KIB),
                  large_size: tuple[int, int] = (8 * MIB, 32 * MIB), seed: int = 7) -> TreeStats:
    """Fill the empty or missing ``root`` with random files in nested folders.

    ``small_files`` files of ``small_size`` bytes spread over up to three folder
    levels, plus ``large_files`` files of ``large_size`` bytes in ``big/``.
    The same ``seed`` gives the same tree.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    for index in range(small_files):
        depth = rng.randint(0, 3)
        parts = [f"{rng.choice(_FOLDERS)}-{rng.randint(1, 4)}" for _ in range(depth)]
        folder = root.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(*small_size)
        (folder / f"file-{index:05d}.bin").write_bytes(rng.randbytes(size))
        total += size
    if large_files:
        (root / "big").mkdir(exist_ok=True)
    for index in range(large_files):
        size = rng.randint(*large_size)
        with open(root / "big" / f"large-{index:02d}.bin", "wb") as fh:
            left = size
            while left:
                chunk = min(left, 4 * MIB)
                fh.write(rng.randbytes(chunk))
                left -= chunk
        total += size
    return TreeStats(small_files + large_files, total)


@dataclass
class TreeDiff:
    """How ``target`` differs from ``source``; empty when they match byte for byte."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    compared: int = 0
    bytes: int = 0

    @property
    def matches(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def describe(self, *, limit: int = 5) -> str:
        parts = []
        for label, paths in (("missing", self.missing), ("extra", self.extra), ("different", self.different)):
            if paths:
                shown = ", ".join(paths[:limit]) + (" ..." if len(paths) > limit else "")
                parts.append(f"{len(paths)} {label} ({shown})")
        return "; ".join(parts) or f"{self.compared} files identical"


def _files(root: Path) -> set[str]:
    found = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            found.add(Path(dirpath, name).relative_to(root).as_posix())
    return found


def compare_trees(source: Path, target: Path) -> TreeDiff:
    """Compare every file under ``source`` with the one under ``target``, byte for byte."""
    have = _files(source)
    got = _files(target) if target.is_dir() else set()
    diff = TreeDiff(missing=sorted(have - got), extra=sorted(got - have))
    for rel in sorted(have & got):
        diff.compared += 1
        diff.bytes += (source / rel).stat().st_size
        if not filecmp.cmp(source / rel, target / rel, shallow=False):
            diff.different.append(rel)
    return diff
