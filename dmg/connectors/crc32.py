"""CRC-32, the checksum S3 checks as ``x-amz-checksum-crc32`` (zlib's polynomial), at the
speed of the machine.

zlib 1.2.13 (CPython's on this platform) computes it at ~0.47 CPU-s per GiB; ISA-L
(python-isal, ``isal.isal_zlib.crc32``, the same function with carry-less multiply) at
~0.1. Every byte uploaded to S3 passes through it once or twice, so it is most of a
node's CPU per GiB after the SHA-256 of the signature is gone (bench/RESULTS.md, issue
11). Without isal the zlib function is used: same values, slower.
"""

from __future__ import annotations

from typing import Any

try:
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - isal is a dependency; this keeps a broken install working
    from zlib import crc32 as _crc32


def crc32(data: Any, value: int = 0) -> int:
    """The CRC-32 of ``data`` (bytes-like) continuing from ``value``."""
    return int(_crc32(data, value))

__all__ = ["crc32"]
