"""The ``azureblob`` store: a container and name prefix in Azure Blob Storage.

Location ``azureblob://container/prefix``. Options (all optional):
``account_url`` (``https://<account>.blob.core.windows.net``, or Azurite's
``http://127.0.0.1:<port>/devstoreaccount1``), ``block_size`` (bytes per staged
block and per ranged read, default 4 MiB), ``max_concurrency`` (blocks or ranges in
flight, default 4), ``retry_total`` (SDK retries, default 3),
``connection_timeout`` and ``read_timeout`` (seconds).

The secret comes from the site, never from the store definition: a
``credential`` mapping passed at construction with ``connection_string``, or
``account_name`` + ``account_key``, or ``sas_token``; without one the client
is anonymous (public containers only).

Writes stage blocks while bytes arrive and commit the block list, with the
object's Content-MD5, on :meth:`StagedWriter.commit`; until then nothing is
visible. A blob of at most one block (``block_size``) is written by one Put Blob
(MD5-checked by the service, atomic; it also drops the blob's uncommitted blocks) at
commit instead: one request per small file, not two. A local file larger than one block,
up to ``upload_cutoff`` (bytes, default 200 MiB; 0 turns it off), goes in one Put Blob
too, streamed from the file (:class:`~dmg.connectors.capabilities.FileUpload`): its MD5
from a first pass over it is the request's ``Content-MD5``, which the service checks
before it stores anything, and the blob's Content-MD5 (:mod:`dmg.connectors.fileupload`).
Abort commits nothing;
uncommitted blocks are garbage-collected by the service: committing a block list
deletes every block not in it (so a shard's next attempt committing a blob deletes
the blocks a fenced attempt left there), and uncommitted blocks expire after 7 days
(Put Block List, Azure Blob REST API). No staging of a fenced attempt is ever
visible; there is nothing for ``cleanup_staging`` to remove. Block ids derive from
the staging id, so two attempts writing the same blob never mix blocks. Reads fetch
ranges of ``block_size`` in parallel, a few ahead, with an ETag condition: a blob that
changes mid-read is ``Retryable``.

Capability ``distributed_write`` (:mod:`dmg.connectors.distributed`): the handle
is a random block-id prefix; a part is staged as blocks of ``block_size`` whose
ids derive from the prefix, the part number and the block's index in the part
(re-staging a part replaces the same blocks); the commit is one block list in
part order (committing the same list again is a no-op). Abort stages nothing
more; uncommitted blocks are garbage-collected by the service.

``Entry.checksum`` is the blob's Content-MD5 (hex) when set; ``Entry.mtime`` is
its last-modified time.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    ExponentialRetry,
)
from azure.storage.blob._generated.models import BlobHTTPHeaders

from dmg.connectors import azureclients
from dmg.connectors import proxies as proxy
from dmg.connectors._support import BoundedPool, ChunkStream, buffered, clean_path, prefetch
from dmg.connectors.base import Entry, StagedWriter, StoreSpec
from dmg.connectors.capabilities import DistributedWrite, FileUpload, NativeChecksum
from dmg.connectors.chunkbuffer import ChunkBuffer
from dmg.connectors.crc32 import crc32
from dmg.connectors.distributed import sorted_parts
from dmg.connectors.fileupload import FileBody, checksum_pass
from dmg.connectors.objectstore import ObjectStore
from dmg.errors import BadInput, Conflict, DmgError, Fatal, NotFound, PermissionDenied, Retryable

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
#: A local file up to this size goes in one Put Blob streamed from it (Azure takes up to
#: 5,000 MiB in one; measured in bench/RESULTS.md, issue 11).
UPLOAD_CUTOFF = 200 * MiB


def _through_proxy_failed(exc: BaseException) -> bool:
    """Whether a request failed at the proxy (urllib3's ProxyError, which azure-core 1.41
    keeps in ``inner_exception``, somewhere in the chain)."""
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return False
        if "ProxyError" in type(seen).__name__ or "to connect to proxy" in str(seen):
            return True
        inner = getattr(seen, "inner_exception", None)
        seen = inner if isinstance(inner, BaseException) else (seen.__cause__ or seen.__context__)
    return False


@contextmanager
def map_azure_errors(what: str) -> Iterator[None]:
    """Translate azure-core exceptions into :mod:`dmg.errors` (the connector's boundary)."""
    try:
        yield
    except DmgError:
        raise
    except ResourceNotFoundError as exc:
        code = getattr(exc, "error_code", None) or ""
        detail = "container does not exist" if code == "ContainerNotFound" else "no such blob"
        raise NotFound(f"{what}: {detail}") from exc
    except ResourceModifiedError as exc:
        raise Retryable(f"{what}: the blob changed while it was read") from exc
    except ClientAuthenticationError as exc:
        raise PermissionDenied(f"{what}: Azure refused the credential",
                               hint="check the store's account key, SAS or connection string") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        code = getattr(exc, "error_code", None) or status
        code = getattr(code, "value", code)  # a StorageErrorCode enum member
        if code == "InvalidBlockList":
            raise Conflict(f"{what}: another writer committed this blob after these blocks were staged",
                           hint="a newer attempt won; this one must not commit") from exc
        if status in (401, 403):
            raise PermissionDenied(f"{what}: access denied by Azure ({code})",
                                   hint="check the store's credential and its permissions") from exc
        if status in _TRANSIENT_STATUS:
            raise Retryable(f"{what}: Azure is busy or failing ({code})") from exc
        raise Fatal(f"{what}: Azure refused the request ({code})") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        if proxy.current() and _through_proxy_failed(exc):
            raise Retryable(f"{what}: {proxy.proxy_problem(proxy.current(), 'Azure')}") from exc
        raise Retryable(f"{what}: Azure endpoint unreachable or timed out") from exc
    except AzureError as exc:
        raise Fatal(f"{what}: {type(exc).__name__}") from exc


class _BlobWriter(StagedWriter, FileUpload):
    """Stages blocks as bytes arrive and commits the block list (visible) on commit; a blob
    that fits in one block, or a local file up to the cutoff, is written by one Put Blob at
    commit instead (one request; as atomic)."""

    def __init__(self, blob: BlobClient, *, staging_id: str, block_size: int,
                 concurrency: int, what: str, file_cutoff: int = 0) -> None:
        super().__init__(what)
        self._blob = blob
        self._block_size = block_size
        self._file_cutoff = file_cutoff
        self._file: tuple[str, int, int, bytes] | None = None  # path, size, CRC-32, MD5
        # Same length for every block id of a blob (a service rule), unique per staging id.
        self._id_prefix = hashlib.sha256(staging_id.encode()).hexdigest()[:24]
        self._pool: BoundedPool[str] = BoundedPool(concurrency, name="dmg-blob-block")
        self._count = 0
        self._buffer = ChunkBuffer()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._from_file = False  # blocks read from a local file (_stage_blocks)

    def takes_file(self, size: int) -> bool:
        """Larger than a block (a smaller blob goes in one Put Blob anyway): one Put Blob up
        to the cutoff, blocks read from the file above it."""
        return (self._block_size < size and self._file is None and not self._from_file
                and self._count == 0 and not self._buffer.held)

    def stage_file(self, source_file: str, *, size: int, on_step: Callable[[int], None]) -> tuple[str, str]:
        if size > self._file_cutoff:
            return self._stage_blocks(source_file, size=size, on_step=on_step)
        md5 = hashlib.md5(usedforsecurity=False)
        crc = 0

        def update(view: memoryview) -> None:
            nonlocal crc
            md5.update(view)
            crc = crc32(view, crc)

        checksum_pass(source_file, size=size, update=update, on_step=on_step, what=self.what)
        self._file = (source_file, size, crc, md5.digest())
        return md5.hexdigest(), "content-md5"

    def _stage_blocks(self, source_file: str, *, size: int,
                      on_step: Callable[[int], None]) -> tuple[str, str]:
        """A file above the cutoff: blocks read from the file once each, each staged with its
        MD5 (checked by the service), the blob's MD5 from the same bytes; the commit is the
        block list. Costs two MD5 passes per byte instead of the streamed path's three (the
        engine's, the blob's, each block's)."""
        self._from_file = True
        done = 0
        with open(source_file, "rb", buffering=0) as source:
            while done < size:
                want = min(self._block_size, size - done)
                data = source.read(want)
                while data is not None and 0 < len(data) < want and (more := source.read(want - len(data))):
                    data += more
                if not data or len(data) < want:
                    raise Fatal(f"{self.what}: the file has {done + len(data or b'')} bytes, "
                                f"the listing said {size}",
                                hint="the file changed while it was copied; run the activity again")
                self._md5.update(data)
                self._stage(data)
                done += want
                on_step(want)
        return self._md5.hexdigest(), "block-md5"

    def _put_file(self) -> None:
        """One Put Blob streamed from the file. azure-storage-blob 12.31.1's ``upload_blob``
        reads a single-put body whole into memory (``_upload_helpers.upload_block_blob``), so
        the generated client's ``upload`` is called directly, with the same headers."""
        assert self._file is not None
        path, size, crc, md5 = self._file
        headers = BlobHTTPHeaders(blob_content_md5=md5)
        with FileBody(path, size=size, crc32=crc, what=self.what) as body:
            try:
                with map_azure_errors(self.what):
                    self._blob._client.block_blob.upload(
                        content_length=size, body=body, transactional_content_md5=bytearray(md5),
                        blob_http_headers=headers)
            except DmgError:
                if body.error is not None:  # the file changed: not a connection problem
                    raise body.error from None
                raise

    def _write(self, chunk: bytes) -> None:
        if self._file is not None or self._from_file:
            raise Fatal(f"{self.what}: write after a file was staged")
        self._buffer.add(chunk)
        self._md5.update(chunk)
        # A full block is staged once more bytes follow it: a blob of exactly one block
        # still goes in one Put Blob.
        while self._buffer.held > self._block_size:
            self._stage(self._buffer.take(self._block_size))

    def _stage(self, data: bytes) -> None:
        block_id = f"{self._id_prefix}-{self._count:06d}"
        self._count += 1
        blob, what = self._blob, self.what

        def stage() -> str:
            with map_azure_errors(what):
                blob.stage_block(block_id, data, length=len(data), validate_content=True)
            return block_id

        self._pool.submit(stage)

    def _commit(self, mtime: float | None) -> None:
        if self._file is not None:
            self._pool.shutdown()
            self._put_file()
            return
        settings = ContentSettings(content_md5=bytearray(self._md5.digest()))
        if self._count == 0:
            body = self._buffer.take_all()
            self._pool.shutdown()
            with map_azure_errors(self.what):
                self._blob.upload_blob(body, length=len(body), overwrite=True, validate_content=True,
                                       content_settings=settings, max_concurrency=1)
            return
        if self._buffer.held:
            self._stage(self._buffer.take_all())
        block_ids = self._pool.results()
        with map_azure_errors(self.what):
            self._blob.commit_block_list([BlobBlock(block_id=i) for i in block_ids],
                                         content_settings=settings)

    def _abort(self) -> None:
        self._buffer.clear()
        self._file = None  # nothing was sent before commit
        self._pool.cancel()


class AzureBlobConnector(ObjectStore, NativeChecksum, DistributedWrite):
    """A container and prefix; see the module docstring for options and credentials."""

    type = "azureblob"
    scheme = "azureblob"
    container_word = "container"

    def __init__(self, spec: StoreSpec, *, credential: Mapping[str, str] | None = None) -> None:
        super().__init__(spec)
        opts = spec.options
        try:
            self.block_size = int(opts.get("block_size", 4 * MiB))
            self.upload_cutoff = int(opts.get("upload_cutoff", UPLOAD_CUTOFF))
            self.max_concurrency = int(opts.get("max_concurrency", 4))
            client_args: dict[str, Any] = {
                "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2,
                                                 retry_total=int(opts.get("retry_total", 3))),
                "connection_timeout": float(opts.get("connection_timeout", 10)),
                "read_timeout": float(opts.get("read_timeout", 60)),
            }
            applied = proxy.current()
            if applied:  # the gateway's HTTP proxy (dmg.proxy)
                client_args["proxies"] = {"http": applied, "https": applied}
        except (TypeError, ValueError) as exc:
            raise BadInput(f"store {spec.name!r}: invalid Azure option ({exc})",
                           hint="sizes are integers in bytes, timeouts numbers of seconds") from exc
        if self.block_size <= 0:
            raise BadInput(f"store {spec.name!r}: block_size must be positive")
        plain = {"retry_total": int(opts.get("retry_total", 3)), **{k: v for k, v in client_args.items()
                                                                    if k != "retry_policy"}}
        key = azureclients.cache_key(str(opts.get("account_url", "")), credential or {}, plain)
        self.service = azureclients.service_client(
            key, lambda: self._service_client(spec, credential or {}, client_args))
        self.container: ContainerClient = self.service.get_container_client(self.container_name)

    @staticmethod
    def _service_client(spec: StoreSpec, credential: Mapping[str, str],
                        client_args: dict[str, Any]) -> BlobServiceClient:
        with map_azure_errors(f"store {spec.name!r}"):
            try:
                if credential.get("connection_string"):
                    return BlobServiceClient.from_connection_string(
                        credential["connection_string"], **client_args)
            except ValueError:
                raise BadInput(f"store {spec.name!r}: the Azure connection string is malformed",
                               hint="copy it again from the storage account's access keys") from None
            account_url = spec.options.get("account_url")
            account = credential.get("account_name")
            if not account_url and account:
                account_url = f"https://{account}.blob.core.windows.net"
            if not account_url:
                raise BadInput(f"store {spec.name!r}: no Azure account URL",
                               hint="set the option account_url, e.g. https://<account>.blob.core.windows.net")
            secret: Any = None
            if credential.get("account_key"):
                secret = {"account_name": account or "", "account_key": credential["account_key"]}
            elif credential.get("sas_token"):
                secret = credential["sas_token"]
            if not str(account_url).startswith(("https://", "http://")):
                raise BadInput(f"store {spec.name!r}: account_url {account_url!r} is not an http(s) URL",
                               hint="e.g. https://<account>.blob.core.windows.net")
            try:
                return BlobServiceClient(str(account_url), credential=secret, **client_args)
            except ValueError:
                raise BadInput(f"store {spec.name!r}: account_url {account_url!r} is malformed",
                               hint="e.g. https://<account>.blob.core.windows.net") from None

    def _entry(self, props: Any) -> Entry:
        md5 = props.content_settings.content_md5 if props.content_settings else None
        return Entry(self._relative(props.name), int(props.size), props.last_modified.timestamp(),
                     bytes(md5).hex() if md5 else None)

    # -- primitives -----------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Blobs at or under ``prefix``, sorted; a non-empty prefix matching nothing is ``NotFound``."""
        base = self._key(prefix)
        rel = clean_path(prefix, store=self.spec.name)
        found = False
        with map_azure_errors(self._what("list", prefix or "/")):
            if rel:
                try:
                    props = self.container.get_blob_client(base).get_blob_properties()
                except ResourceNotFoundError as exc:
                    if getattr(exc, "error_code", None) == "ContainerNotFound":
                        raise
                else:
                    found = True
                    yield self._entry(props)
            for props in self.container.list_blobs(name_starts_with=f"{base}/" if base else None):
                found = True
                yield self._entry(props)
        if rel and not found:
            raise NotFound(f"{prefix!r} does not exist in store {self.spec.name!r}")

    def stat(self, path: str) -> Entry:
        name = self._key(path)
        if not clean_path(path, store=self.spec.name):
            raise NotFound(f"{path!r} is not a blob in store {self.spec.name!r}")
        with map_azure_errors(self._what("stat", path)):
            return self._entry(self.container.get_blob_client(name).get_blob_properties())

    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        what = self._what("read", path)
        blob = self.container.get_blob_client(self._key(path))
        with map_azure_errors(what):
            props = blob.get_blob_properties()
        size, etag, step = int(props.size), props.etag, self.block_size

        def fetch(start: int, length: int) -> Callable[[], bytes]:
            def job() -> bytes:
                with map_azure_errors(what):
                    return blob.download_blob(offset=start, length=length, etag=etag,
                                              match_condition=MatchConditions.IfNotModified,
                                              max_concurrency=1).readall()
            return job

        jobs = (fetch(start, min(step, size - start)) for start in range(max(offset, 0), size, step))
        chunks = prefetch(jobs, limit=self.max_concurrency, name="dmg-blob-read")
        return buffered(ChunkStream(chunks, lambda: map_azure_errors(what)))

    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        self._writable(path)
        return _BlobWriter(self.container.get_blob_client(self._key(path)), staging_id=staging_id,
                           block_size=self.block_size, concurrency=self.max_concurrency,
                           what=self._what("write", path), file_cutoff=self.upload_cutoff)

    def delete(self, path: str) -> None:
        with map_azure_errors(self._what("delete", path)):
            try:
                self.container.get_blob_client(self._key(path)).delete_blob()
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) == "ContainerNotFound":
                    raise

    def check_reachable(self) -> None:
        with map_azure_errors(f"store {self.spec.name!r} (container {self.container_name!r})"):
            self.container.get_container_properties()

    # -- distributed_write ------------------------------------------------------------
    def begin_distributed(self, path: str, *, size: int) -> dict[str, Any]:
        """A block-id prefix for this write: ``{"block_prefix": ...}`` (no request)."""
        self._writable(path)
        return {"block_prefix": uuid.uuid4().hex[:16]}

    def write_range(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                    chunks: Iterable[bytes], length: int) -> dict[str, Any]:
        """Stage part ``part_number`` as blocks (MD5-checked by the service per block) ->
        ``{"part_number", "block_ids"}``."""
        what = f"{self._what('write', path)} (part {part_number})"
        blob = self.container.get_blob_client(self._key(path))
        prefix = str(handle["block_prefix"])
        block_ids: list[str] = []
        pool: BoundedPool[None] = BoundedPool(self.max_concurrency, name="dmg-blob-part")
        buffer = bytearray()
        sent = 0

        def stage(block_id: str, data: bytes) -> None:
            with map_azure_errors(what):
                blob.stage_block(block_id, data, length=len(data), validate_content=True)

        def flush(data: bytes) -> None:
            block_id = f"{prefix}-{int(part_number):05d}-{len(block_ids):04d}"  # one length per blob
            block_ids.append(block_id)
            pool.submit(lambda: stage(block_id, data))

        try:
            for chunk in chunks:
                buffer += chunk
                sent += len(chunk)
                while len(buffer) >= self.block_size:
                    flush(bytes(buffer[:self.block_size]))
                    del buffer[:self.block_size]
            if buffer or not block_ids:
                flush(bytes(buffer))
            pool.results()
        except BaseException:
            pool.cancel()
            raise
        if sent != length:
            raise Fatal(f"{what}: {sent} bytes, expected {length}",
                        hint="the source changed while it was copied; run it again")
        return {"part_number": int(part_number), "block_ids": block_ids}

    def commit_distributed(self, path: str, handle: dict[str, Any], parts: Sequence[dict[str, Any]], *,
                           size: int) -> None:
        """Commit every part's blocks in part order; idempotent (see the module docstring)."""
        blob = self.container.get_blob_client(self._key(path))
        block_ids = [str(b) for p in sorted_parts(parts) for b in p["block_ids"]]
        with map_azure_errors(self._what("commit", path)):
            try:
                blob.commit_block_list([BlobBlock(block_id=i) for i in block_ids])
            except HttpResponseError as exc:
                code = getattr(getattr(exc, "error_code", None), "value", getattr(exc, "error_code", None))
                if code != "InvalidBlockList":
                    raise
                committed, _ = blob.get_block_list("committed")
                if [b.id for b in committed] != block_ids:
                    raise
            props = blob.get_blob_properties()
        if int(props.size) != size:
            raise Fatal(f"{self._what('commit', path)}: the committed blob has {props.size} bytes, "
                        f"expected {size}", hint="run the activity again")

    def abort_distributed(self, path: str, handle: dict[str, Any]) -> None:
        """Nothing to remove: uncommitted blocks are garbage-collected by the service."""

    def close(self) -> None:
        """Nothing to release: the client is the process's (:mod:`dmg.connectors.azureclients`)
        and other stores' connections use it too."""
