"""Capabilities are types, their flags derived; one writer state machine for every store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from dmg.connectors.azureblob import AzureBlobConnector
from dmg.connectors.base import Connector, Entry, StagedWriter, StoreSpec
from dmg.connectors.capabilities import RangedRead
from dmg.connectors.file import FileConnector
from dmg.connectors.s3 import S3Connector
from dmg.connectors.sql.connector import SqlConnector
from dmg.errors import Fatal, Retryable


def test_the_flags_follow_the_types() -> None:
    assert FileConnector.capabilities == {"ranged_read", "keeps_mtime", "distributed_write",
                                          "local_files"}
    assert S3Connector.capabilities == {"ranged_read", "server_side_copy", "native_checksum",
                                        "distributed_write"}
    assert AzureBlobConnector.capabilities == {"native_checksum", "distributed_write"}
    assert SqlConnector.capabilities == frozenset()


class _Bare(Connector):
    def list(self, prefix: str = "") -> Iterator[Entry]:
        return iter(())

    def stat(self, path: str) -> Entry:
        raise NotImplementedError

    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        raise NotImplementedError

    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        raise NotImplementedError

    def delete(self, path: str) -> None:
        return None

    def check_reachable(self) -> None:
        return None


def test_a_capability_without_its_code_cannot_be_used() -> None:
    class Claims(_Bare, RangedRead):  # says it reads ranges, has no open_range
        pass

    assert "ranged_read" in Claims.capabilities
    with pytest.raises(TypeError, match="open_range"):
        Claims(StoreSpec("x", "x", "x"))  # type: ignore[abstract]


class _Failing(StagedWriter):
    def __init__(self) -> None:
        super().__init__("cannot write 'f'")
        self.events: list[str] = []

    def _write(self, chunk: bytes) -> None:
        if chunk == b"bad":
            raise Retryable("disk hiccup")
        self.events.append("write")

    def _commit(self, mtime: float | None) -> None:
        self.events.append("commit")

    def _abort(self) -> None:
        self.events.append("abort")


def test_the_writer_state_machine() -> None:
    done = _Failing()
    done.write(b"ok")
    done.commit()
    done.commit()  # twice: nothing
    done.abort()  # after a commit: nothing
    assert done.events == ["write", "commit"]
    with pytest.raises(Fatal, match="write after committed"):
        done.write(b"more")

    failed = _Failing()
    with pytest.raises(Retryable):
        failed.write(b"bad")
    assert failed.events == ["abort"] and failed.state == "aborted"  # staging dropped at once
    failed.abort()
    assert failed.events == ["abort"]
    with pytest.raises(Fatal, match="commit after abort"):
        failed.commit()


def test_a_file_writer_follows_it(tmp_path: Path) -> None:
    store = FileConnector(StoreSpec("f", "file", str(tmp_path)))
    writer = store.open_write("a.bin", staging_id="s-1.1")
    writer.write(b"abc")
    writer.abort()
    assert list(tmp_path.iterdir()) == []  # the staging file is gone
    with pytest.raises(Fatal, match="commit after abort"):
        writer.commit()



def test_a_file_store_reads_a_range(tmp_path: Path) -> None:
    (tmp_path / "probe").write_bytes(b"0123456789")
    store = FileConnector(StoreSpec("f", "file", str(tmp_path)))
    with store.open_range("probe", offset=3, length=4) as reader:
        assert reader.read() == b"3456"
    with store.open_range("probe", offset=8, length=10) as reader:
        assert reader.read() == b"89"
