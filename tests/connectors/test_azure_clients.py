"""Azure stores of one process share their service client (dmg.connectors.azureclients),
against Azurite."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from dmg.connectors import azureclients
from dmg.connectors.azureblob import AzureBlobConnector
from dmg.connectors.base import StoreSpec


def make_store(server: Any, container: str, *, credential: dict[str, str] | None = None,
               **options: Any) -> AzureBlobConnector:
    return AzureBlobConnector(StoreSpec("blobs", "azureblob", f"azureblob://{container}/data", options),
                              credential=credential or server.credential)


def _write(store: AzureBlobConnector, path: str, data: bytes) -> None:
    writer = store.open_write(path, staging_id="s:1")
    writer.write(data)
    writer.commit()


def test_stores_with_the_same_account_and_credential_share_one_client(azurite: Any,
                                                                      azure_container: str) -> None:
    first = make_store(azurite, azure_container)
    second = make_store(azurite, azure_container)
    other_options = make_store(azurite, azure_container, read_timeout=5)
    assert first.service is second.service
    assert other_options.service is not first.service

    _write(first, "a.txt", b"shared")
    first.close()  # one store done: the others' client is still open
    assert second.stat("a.txt").size == 6


def test_another_credential_gets_its_own_client_and_the_key_is_only_hashed(azurite: Any,
                                                                           azure_container: str) -> None:
    good = make_store(azurite, azure_container)
    other = make_store(azurite, azure_container,
                       credential={**azurite.credential, "connection_string": "UseDevelopmentStorage=true"})
    assert other.service is not good.service
    secret = next(iter(azurite.credential.values()))
    assert secret not in repr(list(azureclients._cache.clients))


def test_the_cache_keeps_at_most_its_limit(azurite: Any, azure_container: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(azureclients, "MAX_CLIENTS", 2)
    services = [make_store(azurite, azure_container, read_timeout=10 + i).service for i in range(3)]
    assert len(azureclients._cache.clients) <= 2
    assert make_store(azurite, azure_container, read_timeout=12).service is services[2]


def _child_cache_size(queue: Any) -> None:
    queue.put(len(azureclients._cache.clients))


def test_a_forked_child_starts_with_no_client(azurite: Any, azure_container: str) -> None:
    make_store(azurite, azure_container)
    assert azureclients._cache.clients
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_cache_size, args=(queue,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 0
