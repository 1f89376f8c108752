"""Incremental copy decisions per overwrite mode."""

from __future__ import annotations

import pytest

from dmg.connectors.base import Entry
from dmg.transfer.compare import COPY, HASH, SKIP, decide

SRC = Entry("f", 100, 1000.0, None)


@pytest.mark.parametrize(("sink", "mode", "keeps", "action"), [
    (None, "if-different", True, COPY),
    (Entry("f", 100, 1000.0), "always", True, COPY),
    (Entry("f", 100, 1000.4), "if-different", True, SKIP),      # same size, same mtime (window)
    (Entry("f", 101, 1000.0), "if-different", True, COPY),      # size differs
    (Entry("f", 100, 1500.0), "if-different", True, COPY),      # a file store keeps mtimes: it differs
    (Entry("f", 100, 1500.0), "if-different", False, SKIP),     # object store: uploaded after the change
    (Entry("f", 100, 500.0), "if-different", False, COPY),      # object store: older than the source
    (Entry("f", 100, 1500.0, "ab" * 16), "if-different", False, HASH),
    (Entry("f", 100, 1000.0), "never", True, SKIP),
    (Entry("f", 1, 0.0), "never", True, SKIP),
    (None, "never", True, COPY),
    (Entry("f", 100, 999.5), "if-newer", True, SKIP),
    (Entry("f", 100, 900.0), "if-newer", True, COPY),
    (Entry("f", -1, 5000.0), "never", True, COPY),              # a SQL table: size unknown
])
def test_decisions(sink: Entry | None, mode: str, keeps: bool, action: str) -> None:
    assert decide(SRC, sink, mode, sink_keeps_mtime=keeps).action == action


def test_checksums_decide_when_both_sides_know_them() -> None:
    src = Entry("f", 100, 1000.0, "aa" * 16)
    assert decide(src, Entry("f", 100, 5.0, "AA" * 16), "if-different", sink_keeps_mtime=True).action == SKIP
    assert decide(src, Entry("f", 100, 1000.0, "bb" * 16), "if-different",
                  sink_keeps_mtime=True).action == COPY


def test_an_unknown_source_size_is_always_copied() -> None:
    table = Entry("t", -1, 1000.0)
    assert decide(table, Entry("t", 10, 1000.0), "if-different", sink_keeps_mtime=True).action == COPY
