"""Blank secrets out of a text: a leaf (it imports nothing of ours), so that the
credential code and the log formatters (:mod:`dmg.logformat`) share one rule."""

from __future__ import annotations

from collections.abc import Iterable

#: Shorter values are not blanked out (they would mangle ordinary words).
MIN_SECRET = 4

MASK = "***"


def redact_values(text: str, values: Iterable[str]) -> str:
    """``text`` with every value of ``values`` (longest first) replaced by ``***``."""
    for value in sorted((v for v in values if len(v) >= MIN_SECRET), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
