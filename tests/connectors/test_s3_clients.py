"""S3 stores of one process share their boto3 client (dmg.connectors.s3clients), against moto."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from dmg.connectors import s3clients
from dmg.connectors.base import StoreSpec
from dmg.connectors.s3 import S3Connector
from tests.servers.s3 import S3Server


def make_store(server: S3Server, bucket: str, *, credential: dict[str, str] | None = None,
               **options: Any) -> S3Connector:
    opts = {"endpoint_url": server.endpoint_url, "region": server.region, "addressing_style": "path",
            **options}
    return S3Connector(StoreSpec("bucket", "s3", f"s3://{bucket}/data", opts),
                       credential=credential or server.credential)


def test_stores_with_the_same_endpoint_and_keys_share_one_client(s3_server: S3Server, s3_bucket: str) -> None:
    first = make_store(s3_server, s3_bucket)
    second = make_store(s3_server, s3_bucket)
    other_options = make_store(s3_server, s3_bucket, read_timeout=5)
    assert first.client is second.client
    assert other_options.client is not first.client

    _write(first, "a.txt", b"shared")
    first.close()  # one store done: the others' client is still open
    assert second.stat("a.txt").size == 6


def _write(store: S3Connector, path: str, data: bytes) -> None:
    writer = store.open_write(path, staging_id="s:1")
    writer.write(data)
    writer.commit()


def test_other_keys_get_their_own_client(s3_server: S3Server, s3_bucket: str) -> None:
    good = make_store(s3_server, s3_bucket)
    _write(good, "b.txt", b"x")
    # moto accepts any key by default; what matters is that a client made for other
    # keys is another client, so a rotated or wrong key never rides on the old one
    other = make_store(s3_server, s3_bucket, credential={"access_key_id": "AKIDOTHER",
                                                         "secret_access_key": "other-secret"})
    assert other.client is not good.client
    assert "other-secret" not in repr(list(s3clients._cache.clients))  # digests, not keys
    assert good.stat("b.txt").size == 1


def test_the_cache_keeps_at_most_its_limit(s3_server: S3Server, s3_bucket: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3clients, "MAX_CLIENTS", 2)
    clients = [make_store(s3_server, s3_bucket, read_timeout=10 + i).client for i in range(3)]
    assert len(s3clients._cache.clients) <= 2
    assert make_store(s3_server, s3_bucket, read_timeout=12).client is clients[2]  # most recent kept


def _child_cache_size(queue: Any) -> None:
    queue.put(len(s3clients._cache.clients))


def test_a_forked_child_starts_with_no_client(s3_server: S3Server, s3_bucket: str) -> None:
    make_store(s3_server, s3_bucket)
    assert s3clients._cache.clients
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_cache_size, args=(queue,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 0


def test_the_payload_is_unsigned_unless_the_store_asks_for_it() -> None:
    """Every body carries a checksum S3 checks (Content-MD5 or CRC-32): no SHA-256 of the
    payload over https or plain http; ``sign_payload`` keeps it for a network to distrust."""
    def options(endpoint: str | None, **extra: bool) -> s3clients.ClientOptions:
        return s3clients.ClientOptions(endpoint_url=endpoint, region="us-east-1", addressing_style="auto",
                                       max_attempts=1, connect_timeout=1, read_timeout=1,
                                       max_pool_connections=10, **extra)

    for endpoint in (None, "https://s3.example.com", "http://127.0.0.1:9000"):
        assert options(endpoint).config().s3["payload_signing_enabled"] is False
        assert options(endpoint, sign_payload=True).config().s3["payload_signing_enabled"] is True
