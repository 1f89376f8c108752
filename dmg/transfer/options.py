"""An activity's copy options (the pipeline JSON's ``options``), checked once.

=================  ===============  ===================================================
option             default          meaning
=================  ===============  ===================================================
``overwrite``      ``if-different`` ``if-different``: skip a file whose size and
                                    modified time (or checksum) match the sink's;
                                    ``always``: copy every file; ``never``: skip a file
                                    the sink has; ``if-newer``: copy only when the
                                    source is newer than the sink's copy. ``true`` /
                                    ``false`` mean ``always`` / ``never``.
``include``        ``[]``           globs; when given, only matching files are copied
``exclude``        ``[]``           globs; matching files are never copied (wins)
``bandwidth``      ``0``            bytes/s for the whole activity run (0: no limit);
                                    ``"10M"``, ``"512K"`` (powers of 1024) accepted;
                                    changeable while it runs (``dmg runs bandwidth``)
``verify``         ``auto``         ``auto`` (``true``): size, the source's native
                                    checksum, the staged bytes where the sink can
                                    re-read them cheaply, the sink's native checksum;
                                    ``re-read``: also re-read every committed file;
                                    ``off`` (``false``): size only
``parallel_files`` ``4``            files copied at once within a shard
``part_size``      ``8 MiB``        bytes per ranged read of a large object
``parallel_parts`` ``4``            ranged reads in flight for one large object
``retries``        ``3``            extra tries of a file after a retryable error
``retry_backoff``  ``0.5``          seconds before the first retry (doubles each time)
=================  ===============  ===================================================

Unknown options are ignored here (a definition saved before a name was retired
still runs); the cloud refuses them when a pipeline is submitted, with a "did you
mean" (:mod:`dmg.definitions`). A bad value raises :class:`~dmg.errors.BadInput`
naming the option.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmg.errors import BadInput

KiB = 1024
MiB = 1024 * KiB

IF_DIFFERENT = "if-different"
ALWAYS = "always"
NEVER = "never"
IF_NEWER = "if-newer"
OVERWRITE_MODES = (IF_DIFFERENT, ALWAYS, NEVER, IF_NEWER)

VERIFY_AUTO = "auto"
VERIFY_OFF = "off"
VERIFY_REREAD = "re-read"
VERIFY_MODES = (VERIFY_AUTO, VERIFY_OFF, VERIFY_REREAD)

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?(?:/s)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": 1024 * MiB, "t": 1024 * 1024 * MiB}


def parse_rate(value: Any, *, what: str = "bandwidth") -> int:
    """Bytes/s from ``1048576``, ``"1M"``, ``"512K"``, ``"2.5MiB/s"`` (powers of 1024); 0 = no limit."""
    if isinstance(value, bool):
        raise BadInput(f"{what} must be a number of bytes per second, not {value!r}")
    if isinstance(value, int | float):
        amount = float(value)
    else:
        match = _RATE.match(str(value))
        if not match:
            raise BadInput(f"{what} {value!r} is not a rate",
                           hint="write bytes per second: 1048576, 1M, 512K (0 means no limit)")
        amount = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if amount < 0 or amount != amount or amount > 2**62:
        raise BadInput(f"{what} must be between 0 and 2^62 bytes per second, not {value!r}")
    return int(amount)


def _int(options: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadInput(f"option {key!r} must be an integer from {low} to {high}, not {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise BadInput(f"option {key!r} must be an integer from {low} to {high}, not {value!r}") from None
    if not low <= number <= high:
        raise BadInput(f"option {key!r} must be from {low} to {high}, not {number}")
    return number


def _globs(options: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = options.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(g, str) and g for g in value):
        raise BadInput(f"option {key!r} must be a list of glob patterns",
                       hint=f'e.g. "{key}": ["*.csv", "logs/**"]')
    return tuple(value)


def _mode(options: Mapping[str, Any], key: str, default: str, modes: tuple[str, ...],
          truthy: str, falsy: str) -> str:
    value = options.get(key, default)
    if value is True:
        return truthy
    if value is False:
        return falsy
    text = str(value).strip().lower().replace("_", "-")
    if text not in modes:
        raise BadInput(f"option {key!r} is {value!r}", hint=f"use one of: {', '.join(modes)}")
    return text


@dataclass(frozen=True)
class CopyOptions:
    """Checked copy options; see the module docstring for each one."""

    overwrite: str = IF_DIFFERENT
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    bandwidth: int = 0
    verify: str = VERIFY_AUTO
    parallel_files: int = 4
    part_size: int = 8 * MiB
    parallel_parts: int = 4
    retries: int = 3
    retry_backoff: float = 0.5

    @classmethod
    def from_json(cls, options: Mapping[str, Any] | None) -> CopyOptions:
        """Check ``options``; raises BadInput naming the first bad one."""
        opts = dict(options or {})
        backoff = opts.get("retry_backoff", 0.5)
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not 0 <= backoff <= 60:
            raise BadInput(f"option 'retry_backoff' must be seconds from 0 to 60, not {backoff!r}")
        return cls(
            overwrite=_mode(opts, "overwrite", IF_DIFFERENT, OVERWRITE_MODES, ALWAYS, NEVER),
            include=_globs(opts, "include"),
            exclude=_globs(opts, "exclude"),
            bandwidth=parse_rate(opts.get("bandwidth", 0) or 0, what="option 'bandwidth'"),
            verify=_mode(opts, "verify", VERIFY_AUTO, VERIFY_MODES, VERIFY_AUTO, VERIFY_OFF),
            parallel_files=_int(opts, "parallel_files", 4, 1, 64),
            part_size=_int(opts, "part_size", 8 * MiB, 64 * KiB, 1024 * MiB),
            parallel_parts=_int(opts, "parallel_parts", 4, 1, 32),
            retries=_int(opts, "retries", 3, 0, 20),
            retry_backoff=float(backoff),
        )

    def to_json(self) -> dict[str, Any]:
        return {"overwrite": self.overwrite, "include": list(self.include), "exclude": list(self.exclude),
                "bandwidth": self.bandwidth, "verify": self.verify, "parallel_files": self.parallel_files,
                "part_size": self.part_size, "parallel_parts": self.parallel_parts,
                "retries": self.retries, "retry_backoff": self.retry_backoff}
