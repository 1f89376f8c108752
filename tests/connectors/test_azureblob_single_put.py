"""A local file sent to Azure Blob (Azurite) in one Put Blob streamed from the file: its
Content-MD5 checked by the service, the cutoff, a file changed after staging."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from dmg.connectors.azureblob import AzureBlobConnector
from dmg.connectors.base import StoreSpec
from dmg.connectors.capabilities import FileUpload
from dmg.connectors.file import FileConnector
from dmg.errors import Fatal, NotFound
from dmg.transfer import CopyOptions, copy_entries
from tests.servers.azurite import AzuriteServer

MiB = 1024 * 1024


def make_store(azurite: AzuriteServer, container: str, **options: Any) -> AzureBlobConnector:
    opts = {"retry_total": 0, "block_size": 1 * MiB, **options}
    return AzureBlobConnector(StoreSpec("blobs", "azureblob", f"azureblob://{container}/data", opts),
                              credential=azurite.credential)


def committed_blocks(azurite: AzuriteServer, container: str, name: str) -> list[Any]:
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        container, f"data/{name}")
    return list(blob.get_block_list("committed")[0])


def test_the_cutoff_chooses_one_put_blob_or_blocks(azurite: AzuriteServer, azure_container: str,
                                                   tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    sizes = {"middle.bin": 3 * MiB + 1, "large.bin": 5 * MiB}
    data = {}
    for name, size in sizes.items():
        data[name] = os.urandom(size)
        (tmp_path / "src" / name).write_bytes(data[name])
    source = FileConnector(StoreSpec("src", "file", str(tmp_path / "src")))
    store = make_store(azurite, azure_container, upload_cutoff=4 * MiB)
    writer = store.open_write("x", staging_id="s:1")
    assert isinstance(writer, FileUpload)
    assert [writer.takes_file(n) for n in (1 * MiB, 1 * MiB + 1, 4 * MiB, 4 * MiB + 1)] == [
        False, True, True, True]  # above the cutoff: blocks read from the file

    result = copy_entries(source, store, list(source.list()), source_prefix="", sink_prefix="",
                          staging_id="s.1", options=CopyOptions.from_json({}))

    files = {f.path: f for f in result.files}
    assert {p: f.status for p, f in files.items()} == dict.fromkeys(sizes, "copied")
    for name in sizes:
        assert files[name].checksum == hashlib.md5(data[name]).hexdigest()
        assert "sink-md5" in files[name].verified
        with store.open_read(name) as reader:
            assert reader.read() == data[name]
    assert "content-md5" in files["middle.bin"].verified
    assert "block-md5" in files["large.bin"].verified
    assert committed_blocks(azurite, azure_container, "middle.bin") == []  # one Put Blob
    assert len(committed_blocks(azurite, azure_container, "large.bin")) == 5


def test_a_wrong_content_md5_is_refused_by_the_service_and_nothing_is_visible(
        azurite: AzuriteServer, azure_container: str, tmp_path: Path) -> None:
    """The service checks the request's Content-MD5 against the body it got: a body that does
    not match (here: the MD5 of other bytes) is refused, and no blob appears."""
    source = tmp_path / "one.bin"
    source.write_bytes(os.urandom(2 * MiB))
    store = make_store(azurite, azure_container)
    writer = store.open_write("one.bin", staging_id="s:1")
    assert isinstance(writer, FileUpload) and writer.takes_file(2 * MiB)
    writer.stage_file(str(source), size=2 * MiB, on_step=lambda n: None)
    path, size, crc, _ = writer._file  # type: ignore[attr-defined]
    writer._file = (path, size, crc, hashlib.md5(b"other bytes").digest())  # type: ignore[attr-defined]

    with pytest.raises(Fatal, match="Azure refused the request \\(400\\)"):
        writer.commit()
    with pytest.raises(NotFound):
        store.stat("one.bin")


def test_a_file_changed_after_staging_is_refused(azurite: AzuriteServer, azure_container: str,
                                                 tmp_path: Path) -> None:
    source = tmp_path / "one.bin"
    source.write_bytes(os.urandom(2 * MiB))
    store = make_store(azurite, azure_container)
    writer = store.open_write("one.bin", staging_id="s:1")
    assert isinstance(writer, FileUpload)
    md5, check = writer.stage_file(str(source), size=2 * MiB, on_step=lambda n: None)
    assert (md5, check) == (hashlib.md5(source.read_bytes()).hexdigest(), "content-md5")
    with open(source, "r+b") as f:
        f.write(b"changed")

    with pytest.raises(Fatal, match="CRC-32"):
        writer.commit()
    with pytest.raises(NotFound):
        store.stat("one.bin")


def test_a_file_shorter_than_listed_above_the_cutoff_fails_and_leaves_nothing(
        azurite: AzuriteServer, azure_container: str, tmp_path: Path) -> None:
    """Blocks read from the file: a file that ends before its listed size fails while it is
    staged, and no blob appears (the staged blocks are never committed)."""
    source = tmp_path / "short.bin"
    source.write_bytes(os.urandom(5 * MiB))
    store = make_store(azurite, azure_container, upload_cutoff=2 * MiB)
    writer = store.open_write("short.bin", staging_id="s:1")
    assert isinstance(writer, FileUpload) and writer.takes_file(6 * MiB)

    with pytest.raises(Fatal, match="the file has 5242880 bytes"):
        writer.stage_file(str(source), size=6 * MiB, on_step=lambda n: None)

    writer.abort()
    with pytest.raises(NotFound):
        store.stat("short.bin")
