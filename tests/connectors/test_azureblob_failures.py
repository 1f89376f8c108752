"""The ``azureblob`` store against Azurite: server down, wrong key, missing container, blocks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient

from dmg.connectors import connector_for
from dmg.connectors.azureblob import AzureBlobConnector
from dmg.connectors.base import StoreSpec
from dmg.errors import BadInput, Conflict, NotFound, PermissionDenied, Retryable
from tests.servers.azurite import ACCOUNT, AzuriteServer, start_azurite
from tests.waiting import wait_for


def make_store(container: str, *, credential: dict[str, str], **options: Any) -> AzureBlobConnector:
    opts = {"retry_total": 0, "block_size": 4096, **options}
    return AzureBlobConnector(StoreSpec("blobs", "azureblob", f"azureblob://{container}/data", opts),
                              credential=credential)


@pytest.fixture
def store(azurite: AzuriteServer, azure_container: str) -> Iterator[AzureBlobConnector]:
    connector = make_store(azure_container, credential=azurite.credential)
    yield connector
    connector.close()


def test_the_registry_builds_an_azureblob_store(azurite: AzuriteServer) -> None:
    spec = StoreSpec("b", "azureblob", "azureblob://c", {"account_url": azurite.account_url})
    assert isinstance(connector_for(spec), AzureBlobConnector)


def test_a_stopped_server_is_retryable(tmp_path: Path) -> None:
    process = start_azurite(tmp_path)
    try:
        server = AzuriteServer(process.port)
        with BlobServiceClient.from_connection_string(server.connection_string) as service:
            service.create_container("gone-soon")
        store = make_store("gone-soon", credential=server.credential, connection_timeout=2)
        store.check_reachable()
    finally:
        process.stop()

    for call in (store.check_reachable, lambda: store.stat("a.bin"), lambda: list(store.list()),
                 lambda: store.open_read("a.bin")):
        with pytest.raises(Retryable, match="unreachable"):
            call()
    writer = store.open_write("a.bin", staging_id="s:1")
    writer.write(b"data")
    with pytest.raises(Retryable):
        writer.commit()


def test_a_wrong_account_key_is_permission_denied(azurite: AzuriteServer, azure_container: str) -> None:
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    store = make_store(azure_container, credential={"account_name": ACCOUNT, "account_key": wrong_key},
                       account_url=azurite.account_url)

    with pytest.raises(PermissionDenied) as denied:
        store.check_reachable()
    with pytest.raises(PermissionDenied):
        list(store.list())
    assert wrong_key not in str(denied.value)


def test_a_missing_container_is_not_found(azurite: AzuriteServer) -> None:
    store = make_store("no-such-container", credential=azurite.credential)

    with pytest.raises(NotFound, match="container does not exist"):
        store.check_reachable()
    with pytest.raises(NotFound, match="container does not exist"):
        list(store.list())


@pytest.mark.parametrize("location", ["s3://c/x", "azureblob://", "azureblob:///x"])
def test_a_malformed_location_is_bad_input(location: str) -> None:
    with pytest.raises(BadInput, match="azureblob://container"):
        AzureBlobConnector(StoreSpec("b", "azureblob", location))


def test_an_account_url_is_required_without_a_connection_string() -> None:
    with pytest.raises(BadInput, match="account_url"):
        AzureBlobConnector(StoreSpec("b", "azureblob", "azureblob://c"))
    with pytest.raises(BadInput, match="not an http"):
        AzureBlobConnector(StoreSpec("b", "azureblob", "azureblob://c", {"account_url": "ftp://x"}))


def test_a_malformed_connection_string_is_bad_input_without_echo() -> None:
    with pytest.raises(BadInput, match="connection string is malformed") as refused:
        AzureBlobConnector(StoreSpec("b", "azureblob", "azureblob://c"),
                           credential={"connection_string": "AccountKey=s3cr3t;garbage"})
    assert "s3cr3t" not in str(refused.value)


def uncommitted_blocks(blob: BlobClient) -> list[BlobBlock]:
    """The blob's uncommitted blocks; none while Azure does not know the blob yet.

    Until the first block is staged, Azure (and Azurite) answer 404 BlobNotFound.
    """
    try:
        return list(blob.get_block_list("uncommitted")[1])
    except ResourceNotFoundError:
        return []


def test_blocks_are_staged_while_writing_and_committed_with_content_md5(
        store: AzureBlobConnector, azurite: AzuriteServer, azure_container: str) -> None:
    data = b"0123456789abcdef" * 1000  # 16 000 bytes: four blocks of 4096
    blob = BlobServiceClient.from_connection_string(azurite.connection_string) \
        .get_blob_client(azure_container, "data/blocks.bin")

    writer = store.open_write("blocks.bin", staging_id="s:1")
    writer.write(data)
    # the three full blocks are staged in the background
    wait_for(lambda: len(uncommitted_blocks(blob)) >= 3, timeout=30, interval=0.02,
             what="three blocks staged")
    assert len(uncommitted_blocks(blob)) == 3  # the fourth is still in the buffer
    with pytest.raises(NotFound):
        store.stat("blocks.bin")
    writer.commit()

    committed, _ = blob.get_block_list("committed")
    assert len(committed) == 4
    assert store.stat("blocks.bin").checksum == hashlib.md5(data).hexdigest()
    assert bytes(blob.get_blob_properties().content_settings.content_md5) == hashlib.md5(data).digest()


def test_a_stale_writer_never_mixes_blocks_into_a_newer_commit(store: AzureBlobConnector) -> None:
    stale = store.open_write("race.bin", staging_id="shard:1")
    stale.write(b"a" * 10_000)
    current = store.open_write("race.bin", staging_id="shard:2")
    current.write(b"b" * 10_000)
    current.commit()

    with pytest.raises(Conflict, match="another writer committed"):
        stale.commit()  # the service dropped the stale, uncommitted blocks
    with store.open_read("race.bin") as reader:
        assert reader.read() == b"b" * 10_000


def test_reading_ranges_in_parallel_from_an_offset(store: AzureBlobConnector) -> None:
    data = bytes(range(256)) * 200  # 51 200 bytes: thirteen ranges of 4096
    writer = store.open_write("ranges.bin", staging_id="s:1")
    writer.write(data)
    writer.commit()

    with store.open_read("ranges.bin", offset=5000) as reader:
        assert reader.read() == data[5000:]


@pytest.mark.parametrize("size", [3000, 4096])
def test_a_blob_of_one_block_is_one_put_blob_at_commit(
        store: AzureBlobConnector, azurite: AzuriteServer, azure_container: str, size: int) -> None:
    """Up to one block: nothing is staged before commit, the commit is a single Put Blob
    (no block list) with the blob's Content-MD5."""
    data = os.urandom(size)
    blob = BlobServiceClient.from_connection_string(azurite.connection_string) \
        .get_blob_client(azure_container, "data/small.bin")

    writer = store.open_write("small.bin", staging_id="s:1")
    writer.write(data[:1000])
    writer.write(data[1000:])
    assert uncommitted_blocks(blob) == []
    with pytest.raises(NotFound):
        store.stat("small.bin")
    writer.commit()

    assert blob.get_block_list("committed")[0] == []
    assert store.stat("small.bin").checksum == hashlib.md5(data).hexdigest()
    with store.open_read("small.bin") as reader:
        assert reader.read() == data
