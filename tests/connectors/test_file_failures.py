"""The ``file`` store's failure paths: escapes from the root, blocked paths, permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dmg.connectors import connector_for
from dmg.connectors.base import StoreSpec
from dmg.connectors.file import FileConnector
from dmg.errors import BadInput, Fatal, NotFound, PermissionDenied


@pytest.fixture
def store(tmp_path: Path) -> FileConnector:
    root = tmp_path / "root"
    root.mkdir()
    return FileConnector(StoreSpec("files", "file", str(root)))


def test_dot_dot_cannot_leave_the_root(store: FileConnector) -> None:
    for call in (lambda: store.stat("../secret"), lambda: store.open_read("a/../../secret"),
                 lambda: store.open_write("../secret", staging_id="s:1"), lambda: store.delete("../x")):
        with pytest.raises(PermissionDenied, match="outside store"):
            call()


def test_a_symlink_out_of_the_root_is_not_followed(store: FileConnector, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (store.root / "link").symlink_to(outside)

    with pytest.raises(PermissionDenied, match="outside store"):
        store.open_read("link/secret.txt")
    with pytest.raises(PermissionDenied):
        list(store.list())


def test_a_link_planted_at_a_staging_name_is_not_written_through(store: FileConnector,
                                                                  tmp_path: Path) -> None:
    """Given a link out of the root at the very name a write will stage under, in a folder
    the store already knows, then the write fails and the file outside is untouched."""
    (store.root / "in").mkdir()
    (store.root / "in" / "a").write_bytes(b"old")
    assert store.stat("in/a").size == 3  # the folder is known: the short path is taken
    outside = tmp_path / "victim"
    outside.write_bytes(b"keep")
    (store.root / "in" / ".dmg-staging.s.1.a").symlink_to(outside)

    with pytest.raises(Fatal, match="cannot write"):
        store.open_write("in/a", staging_id="s.1")
    assert outside.read_bytes() == b"keep" and (store.root / "in" / "a").read_bytes() == b"old"


def test_a_link_in_a_known_folder_is_checked_before_it_is_read_or_stated(store: FileConnector,
                                                                         tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (store.root / "in").mkdir()
    (store.root / "in" / "a").write_bytes(b"a")
    assert store.stat("in/a").size == 1
    (store.root / "in" / "link").symlink_to(tmp_path / "secret.txt")

    for call in (lambda: store.stat("in/link"), lambda: store.local_file("in/link"),
                 lambda: store.open_read("in/link"), lambda: store.open_local("in/link")):
        with pytest.raises(PermissionDenied, match="outside store"):
            call()


def test_a_source_opened_in_a_known_folder_follows_a_link_only_inside_the_root(store: FileConnector) -> None:
    """Given a known folder holding a file and a link to it (inside the root), when each is
    opened as a local source (``O_NOFOLLOW`` first, no lstat), then both read the file."""
    (store.root / "in").mkdir()
    (store.root / "in" / "a").write_bytes(b"inside")
    assert store.stat("in/a").size == 6  # the folder is known: the short path is taken
    (store.root / "in" / "link").symlink_to(store.root / "in" / "a")

    for path in ("in/a", "in/link"):
        fd = store.open_local(path)
        try:
            assert os.pread(fd, 100, 0) == b"inside"
        finally:
            os.close(fd)
    with pytest.raises(NotFound):
        store.open_local("in/missing")


def test_a_file_where_a_directory_is_expected_is_a_clear_error(store: FileConnector) -> None:
    (store.root / "plain").write_bytes(b"x")

    with pytest.raises(Fatal, match="cannot write"):
        store.open_write("plain/child.bin", staging_id="s:1")
    with pytest.raises(Fatal, match="cannot read"):
        store.open_read("plain/child.bin")
    with pytest.raises(NotFound):
        store.stat("plain/child.bin")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_an_unreadable_directory_is_permission_denied(store: FileConnector) -> None:
    locked = store.root / "locked"
    locked.mkdir()
    (locked / "f.bin").write_bytes(b"x")
    locked.chmod(0)
    try:
        with pytest.raises(PermissionDenied):
            list(store.list("locked"))
        with pytest.raises(PermissionDenied):
            store.open_read("locked/f.bin")
    finally:
        locked.chmod(0o755)


def test_a_missing_root_is_reported_on_the_reachability_check(tmp_path: Path) -> None:
    store = connector_for(StoreSpec("files", "file", str(tmp_path / "absent")))

    with pytest.raises(NotFound, match="does not exist on this node"):
        store.check_reachable()


def test_an_unknown_store_type_names_the_known_ones() -> None:
    with pytest.raises(BadInput, match="azureblob, file, s3, sql"):
        connector_for(StoreSpec("x", "ftp", "ftp://host"))
