"""When and how one large object is split into parts written from several nodes.

Two activity options (unknown to :class:`~dmg.transfer.CopyOptions`, which ignores
them; checked here):

=================== ============ ====================================================
option              default      meaning
=================== ============ ====================================================
``split_above``     ``256 MiB``  an object larger than this (and than two parts) is
                                 copied as parts by several nodes and committed once,
                                 when the sink has ``distributed_write``; ``0``: never;
                                 unset, a local file to S3 splits above 8 GiB
                                 (:func:`dispatcher.splitting.large_file_split`)
``split_part_size`` ``64 MiB``   bytes per part (one shard each); at least 5 MiB
                                 (S3's minimum part); raised so that no object has
                                 more than 10,000 parts
=================== ============ ====================================================

(``part_size`` already names the size of the ranged reads *within* one copy.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmg.errors import BadInput

MiB = 1024 * 1024
MIN_PART = 5 * MiB
MAX_PARTS = 10_000
#: The activity options read here.
OPTION_NAMES = ("split_above", "split_part_size")


def _size(options: Mapping[str, Any], key: str, default: int, low: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadInput(f"option {key!r} must be a number of bytes, not {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise BadInput(f"option {key!r} must be a number of bytes, not {value!r}") from None
    if (number < low and number != 0) or number < 0:
        raise BadInput(f"option {key!r} must be at least {low} bytes, not {number}",
                       hint="S3 wants parts of at least 5 MiB (5242880 bytes)")
    return number


@dataclass(frozen=True)
class SplitOptions:
    split_above: int = 256 * MiB
    part_size: int = 64 * MiB

    @classmethod
    def from_json(cls, options: Mapping[str, Any] | None) -> SplitOptions:
        opts = dict(options or {})
        part = _size(opts, "split_part_size", 64 * MiB, MIN_PART)
        if part == 0:
            raise BadInput("option 'split_part_size' must be at least 5 MiB, not 0")
        return cls(split_above=_size(opts, "split_above", 256 * MiB, 0), part_size=part)

    def splits(self, size: int) -> bool:
        """Whether an object of ``size`` bytes is split (the sink permitting)."""
        return self.split_above > 0 and size > self.split_above and size >= 2 * self.part_size


def part_ranges(size: int, part_size: int, *, max_parts: int = MAX_PARTS) -> list[tuple[int, int, int]]:
    """``(part number, offset, length)`` covering ``size`` bytes; numbers from 1. The part
    size grows (in whole MiB) when ``size`` would need more than ``max_parts`` parts."""
    if size <= 0:
        return []
    step = max(part_size, 1)
    if -(-size // step) > max_parts:
        step = -(-size // max_parts)
        step = -(-step // MiB) * MiB
    return [(i + 1, offset, min(step, size - offset)) for i, offset in enumerate(range(0, size, step))]
