"""The ``s3`` store: a bucket and key prefix on Amazon S3 or any S3-compatible server.

Location ``s3://bucket/prefix``. Options (all optional): ``endpoint_url``,
``region``, ``addressing_style`` (``auto``/``path``/``virtual``),
``multipart_threshold`` and ``multipart_chunksize`` (bytes, default 8 MiB;
S3 wants parts of at least 5 MiB), ``max_concurrency`` (parts in flight, default
4), ``upload_cutoff`` (bytes, default 200 MiB: a local file from the multipart threshold up
to this size goes in one ``PutObject`` streamed from the file, checked by its CRC-32; 0
turns it off),
``part_checksum`` (``crc32``, the default, or ``md5``: how each part is checked
and the completed object verified, :mod:`dmg.connectors.s3upload`), ``sign_payload``
(default false: the signature does not cover the body, which carries its own checksum
that S3 checks; true adds a SHA-256 of every body, :mod:`dmg.connectors.s3clients`),
``max_attempts``
(botocore retries, default 3), ``connect_timeout`` and
``read_timeout`` (seconds).

Credentials come from boto3's standard chain (environment, shared files,
instance role) unless a ``credential`` mapping with ``access_key_id`` /
``secret_access_key`` (and optional ``session_token``) is passed at construction;
the store definition never holds a secret.

Writes are invisible until commit (:mod:`dmg.connectors.s3upload`): a small object is
buffered and PUT on commit; a large one goes through a multipart upload whose parts
are sent while writing and which is completed on commit (aborted on abort). An incomplete
upload left by a crashed node is not visible either: :meth:`S3Connector.cleanup_staging`
given the attempt's targets aborts it (the node that ran the shard's next attempt
does, :mod:`workers.run.leftovers`); a bucket lifecycle rule
``AbortIncompleteMultipartUpload`` reclaims the space of any other.

Capability ``distributed_write`` (:mod:`dmg.connectors.distributed`): the handle
is a multipart upload id (created with ``ChecksumAlgorithm=CRC32``); each part is one
``UploadPart`` (held in memory: parts are at most a few tens of MiB) with its CRC-32
(``x-amz-checksum-crc32``, checked by S3; Content-MD5 with ``part_checksum = "md5"``); its
ETag, S3's MD5 of the stored part, goes back to the caller too. A part from a local file
(:class:`~dmg.connectors.capabilities.FileRangeWrite`, :meth:`S3Connector.send_file_range`)
is read once into one buffer, its CRC-32 computed as it is read, and sent as it is. The
commit is ``CompleteMultipartUpload`` with the parts sorted; the composite CRC-32 S3
answers (else its ``HeadObject``), and the ETag (MD5 of the parts' MD5s), must be the
parts'; a mismatch deletes the object (nothing wrong stays visible) and raises ``Fatal``. A
repeated commit whose upload is gone is done when the object at the key has the parts'
composite CRC-32 (or multipart ETag) and the expected size. Parts must be at least 5 MiB,
except the last, and at most 10,000.

``Entry.checksum`` is the object's MD5 (hex) when its ETag is a plain MD5, i.e.
for objects uploaded in one PUT without SSE-KMS; ``Entry.mtime`` is the time
S3 stored the object (the ``mtime`` given to commit is not kept).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import botocore.exceptions as bex

from dmg.connectors import proxies as proxy
from dmg.connectors._support import ChunkStream, buffered, clean_path
from dmg.connectors.base import Connector, Entry, StagedWriter, StoreSpec
from dmg.connectors.capabilities import (
    DistributedWrite,
    FileRangeWrite,
    NativeChecksum,
    RangedRead,
    ServerSideCopy,
)
from dmg.connectors.crc32 import crc32
from dmg.connectors.distributed import sorted_parts
from dmg.connectors.fileupload import read_file_range
from dmg.connectors.objectstore import ObjectStore
from dmg.connectors.s3clients import ClientOptions, keys_digest, s3_client
from dmg.connectors.s3errors import (
    MD5_ETAG,
    MULTIPART_ETAG,
    NOT_FOUND,
    content_md5,
    map_s3_errors,
    multipart_etag,
)
from dmg.connectors.s3upload import PART_CHECKSUMS, S3Writer, UploadShape, composite_crc32, crc32_b64
from dmg.errors import BadInput, DmgError, Fatal, NotFound, Retryable

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: A local file up to this size is sent in one streamed PUT (rclone's upload_cutoff too;
#: measured in bench/RESULTS.md, issue 11). S3 takes at most 5 GiB in one PUT.
UPLOAD_CUTOFF = 200 * MiB
MAX_SINGLE_PUT = 5 * 1024 * MiB

__all__ = ["S3Connector", "map_s3_errors", "multipart_etag"]


def composite_of(part_crcs: Sequence[str]) -> str:
    """The composite CRC-32 of parts given as S3 writes their CRC-32s (base64)."""
    return composite_crc32([int.from_bytes(base64.b64decode(c), "big") for c in part_crcs])


class S3Connector(ObjectStore, RangedRead, ServerSideCopy, NativeChecksum, DistributedWrite, FileRangeWrite):
    """A bucket and prefix; see the module docstring for options and credentials."""

    type = "s3"
    scheme = "s3"
    container_word = "bucket"

    def __init__(self, spec: StoreSpec, *, credential: Mapping[str, str] | None = None) -> None:
        super().__init__(spec)
        opts = spec.options
        try:
            self.upload_shape = UploadShape(
                threshold=int(opts.get("multipart_threshold", 8 * MiB)),
                part_size=int(opts.get("multipart_chunksize", 8 * MiB)),
                concurrency=int(opts.get("max_concurrency", 4)),
                part_checksum=str(opts.get("part_checksum", "crc32")),
                file_cutoff=int(opts.get("upload_cutoff", UPLOAD_CUTOFF)),
            )
            options = ClientOptions(
                endpoint_url=opts.get("endpoint_url") or None,
                region=opts.get("region"),
                addressing_style=str(opts.get("addressing_style", "auto")),
                max_attempts=int(opts.get("max_attempts", 3)),
                connect_timeout=float(opts.get("connect_timeout", 10)),
                read_timeout=float(opts.get("read_timeout", 60)),
                max_pool_connections=max(10, int(opts.get("max_concurrency", 4)) * 2),
                proxy=proxy.current(),
                sign_payload=opts.get("sign_payload", False) is True,
            )
        except (TypeError, ValueError) as exc:
            raise BadInput(f"store {spec.name!r}: invalid S3 option ({exc})",
                           hint="sizes are integers in bytes, timeouts numbers of seconds") from exc
        if not 0 <= self.upload_shape.file_cutoff <= MAX_SINGLE_PUT:
            raise BadInput(f"store {spec.name!r}: upload_cutoff must be between 0 and 5 GiB "
                           f"(S3's largest single PUT), not {self.upload_shape.file_cutoff}")
        if self.upload_shape.part_checksum not in PART_CHECKSUMS:
            raise BadInput(f"store {spec.name!r}: part_checksum must be one of {', '.join(PART_CHECKSUMS)}")
        keys: dict[str, Any] = {}
        if credential:
            keys = {"aws_access_key_id": credential.get("access_key_id"),
                    "aws_secret_access_key": credential.get("secret_access_key"),
                    "aws_session_token": credential.get("session_token")}
        self.client = s3_client(options, keys)
        self._endpoint = (options.endpoint_url, keys_digest(keys))

    @property
    def bucket(self) -> str:
        return self.container_name

    def _entry(self, key: str, size: int, last_modified: Any, etag: str | None) -> Entry:
        tag = (etag or "").strip('"').lower()
        return Entry(self._relative(key), int(size), last_modified.timestamp(),
                     tag if MD5_ETAG.match(tag) else None)

    # -- primitives -----------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[Entry]:
        """Objects at or under ``prefix``, sorted; a non-empty prefix matching nothing is ``NotFound``."""
        base = self._key(prefix)
        rel = clean_path(prefix, store=self.spec.name)
        query = f"{base}/" if base else ""
        found = False
        with map_s3_errors(self._what("list", prefix or "/")):
            if rel:
                try:
                    head = self.client.head_object(Bucket=self.bucket, Key=base)
                except bex.ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey"}:
                        raise
                else:
                    found = True
                    yield self._entry(base, head["ContentLength"], head["LastModified"], head.get("ETag"))
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=query)
            for page in pages:
                for item in page.get("Contents", []):
                    if item["Key"].endswith("/"):
                        continue  # a "directory" marker, not an object
                    found = True
                    yield self._entry(item["Key"], item["Size"], item["LastModified"], item.get("ETag"))
        if rel and not found:
            raise NotFound(f"{prefix!r} does not exist in store {self.spec.name!r}")

    def stat(self, path: str) -> Entry:
        key = self._key(path)
        if not key or key == self.prefix:
            raise NotFound(f"{path!r} is not an object in store {self.spec.name!r}")
        with map_s3_errors(self._what("stat", path)):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        return self._entry(key, head["ContentLength"], head["LastModified"], head.get("ETag"))

    def open_read(self, path: str, *, offset: int = 0) -> BinaryIO:
        return self._get(path, offset=offset, length=None)

    def open_range(self, path: str, *, offset: int, length: int) -> BinaryIO:
        """One ranged GET (the engine reads parts of a large object in parallel with it)."""
        return self._get(path, offset=offset, length=length)

    def _get(self, path: str, *, offset: int, length: int | None) -> BinaryIO:
        key = self._key(path)
        what = self._what("read", path)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if length is not None and length <= 0:
            self.stat(path)
            return buffered(ChunkStream(iter(()), lambda: map_s3_errors(what)))
        if length is not None:
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            args["Range"] = f"bytes={offset}-"
        body = None
        with map_s3_errors(what):
            try:
                body = self.client.get_object(**args)["Body"]
            except bex.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                    raise
        if body is None:  # the offset is at or past the end, or the object vanished
            self.stat(path)
            return buffered(ChunkStream(iter(()), lambda: map_s3_errors(what)))
        stream = ChunkStream(body.iter_chunks(1024 * 1024), lambda: map_s3_errors(what),
                             on_close=body.close)
        return buffered(stream)

    def open_write(self, path: str, *, staging_id: str) -> StagedWriter:
        self._writable(path)
        return S3Writer(self.client, self.bucket, self._key(path), shape=self.upload_shape,
                        what=self._what("write", path))

    def delete(self, path: str) -> None:
        key = self._key(path)
        with map_s3_errors(self._what("delete", path)):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def cleanup_staging(self, staging_id: str, *, targets: Sequence[str] = ()) -> int:
        """Abort every incomplete multipart upload of the ``targets``' keys (an upload does not
        carry its staging id; hence the base class's rule: only once no attempt writes).
        Without targets nothing can be told apart: 0."""
        keys = {self._key(path) for path in targets}
        if not keys:
            return 0
        low, high = min(keys), max(keys)
        common = low[:next((i for i, (a, b) in enumerate(zip(low, high, strict=False)) if a != b),
                           len(low))]  # the keys' longest common string prefix
        aborted = 0
        with map_s3_errors(self._what("clean up staging of", staging_id)):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=common)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"] not in keys:
                        continue
                    try:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                    except bex.ClientError as exc:
                        if exc.response.get("Error", {}).get("Code") not in NOT_FOUND:
                            raise
                        continue
                    aborted += 1
        return aborted

    def check_reachable(self) -> None:
        what = f"store {self.spec.name!r}"
        try:
            with map_s3_errors(what):
                self.client.head_bucket(Bucket=self.bucket)
        except NotFound:
            raise NotFound(f"{what}: bucket {self.bucket!r} does not exist",
                           hint="create it, or fix the bucket name in the store's location") from None

    # -- capabilities ---------------------------------------------------------------
    def can_copy_from(self, source: Connector) -> bool:
        """An s3 store on the same endpoint with the same keys: this store's client can
        read the source bucket only then (no guess about another key's permissions)."""
        return isinstance(source, S3Connector) and source._endpoint == self._endpoint

    def copy_from(self, source: Connector, source_path: str, target_path: str) -> Entry:
        """One ``CopyObject`` (atomic: the target appears whole or not at all; at most
        5 GiB, :attr:`max_server_side_copy`); ``BadInput`` for a source it cannot copy from."""
        if not isinstance(source, S3Connector) or not self.can_copy_from(source):
            raise BadInput(f"store {self.spec.name!r}: server-side copy needs an s3 source "
                           "on the same endpoint with the same keys", hint="stream the copy instead")
        self._writable(target_path)
        with map_s3_errors(self._what("copy to", target_path)):
            self.client.copy_object(CopySource={"Bucket": source.bucket, "Key": source._key(source_path)},
                                    Bucket=self.bucket, Key=self._key(target_path))
        return self.stat(target_path)

    # -- distributed_write ------------------------------------------------------------
    def begin_distributed(self, path: str, *, size: int) -> dict[str, Any]:
        """Create the multipart upload: ``{"upload_id": ..., "checksum": "crc32"}`` (with
        ``part_checksum = "md5"``: no ``checksum``, parts carry Content-MD5)."""
        self._writable(path)
        crc = self.upload_shape.part_checksum == "crc32"
        extra = {"ChecksumAlgorithm": "CRC32"} if crc else {}
        with map_s3_errors(self._what("write", path)):
            reply = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._key(path), **extra)
        handle: dict[str, Any] = {"upload_id": str(reply["UploadId"])}
        if crc:
            handle["checksum"] = "crc32"
        return handle

    def write_range(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                    chunks: Iterable[bytes], length: int) -> dict[str, Any]:
        """``UploadPart`` ``part_number`` (idempotent: a re-upload replaces it) ->
        ``{"part_number", "etag", "md5", "crc32"}``: ``md5`` is the part's ETag when it is a
        plain MD5 (S3's MD5 of the bytes it stored, which the caller compares with its own);
        ``crc32`` the part's CRC-32 sent as ``x-amz-checksum-crc32`` (S3 checks it on
        receipt) when the handle says ``checksum: crc32``, else the part carries Content-MD5
        (a handle begun before CRC-32 parts has no ``checksum``)."""
        data = b"".join(chunks)
        if len(data) != length:
            raise Fatal(f"{self._what('write', path)}: part {part_number} has {len(data)} bytes, "
                        f"expected {length}", hint="the source changed while it was copied; run it again")
        return self._upload_part(path, handle, part_number=part_number, data=data)

    def send_file_range(self, path: str, handle: dict[str, Any], *, part_number: int, offset: int,
                        length: int, source_file: str, on_step: Callable[[int], None]) -> dict[str, Any]:
        """The range read once into one buffer, in blocks of :data:`FILE_READ_BLOCK` (its
        CRC-32 computed block by block, while the bytes are in the cache), then sent as it is
        (no join, no copy): ``UploadPart`` as :meth:`write_range`."""
        data = read_file_range(source_file, offset=offset, length=length, on_step=on_step,
                               what=self._what("write", path))
        return self._upload_part(path, handle, part_number=part_number, data=data.buffer, crc=data.crc32)

    def _upload_part(self, path: str, handle: dict[str, Any], *, part_number: int, data: bytes | bytearray,
                     crc: int | None = None) -> dict[str, Any]:
        check: dict[str, str]
        if handle.get("checksum") == "crc32":
            check = {"ChecksumCRC32": crc32_b64(crc32(data) if crc is None else crc)}
        else:
            check = {"ContentMD5": content_md5(data)}
        with map_s3_errors(f"{self._what('write', path)} (part {part_number})"):
            reply = self.client.upload_part(Bucket=self.bucket, Key=self._key(path),
                                            UploadId=str(handle["upload_id"]), PartNumber=int(part_number),
                                            Body=data, **check)
        etag = str(reply["ETag"])
        tag = etag.strip('"').lower()
        result: dict[str, Any] = {"part_number": int(part_number), "etag": etag}
        if MD5_ETAG.match(tag):
            result["md5"] = tag
        if "ChecksumCRC32" in check:
            result["crc32"] = check["ChecksumCRC32"]
        return result

    def commit_distributed(self, path: str, handle: dict[str, Any], parts: Sequence[dict[str, Any]], *,
                           size: int) -> None:
        """``CompleteMultipartUpload``; idempotent: a repeated commit whose upload is gone (S3:
        NoSuchUpload; moto 5.2.5: a 500 when it lands while the first still stores the object)
        is done when the object at the key is the parts' (composite CRC-32, or multipart ETag,
        and size); the object S3 assembled must have the parts' composite CRC-32 / ETag."""
        what = self._what("commit", path)
        ordered = sorted_parts(parts)
        with_crc = bool(ordered) and all(p.get("crc32") for p in ordered)
        listed: list[dict[str, Any]] = []
        for p in ordered:
            entry: dict[str, Any] = {"PartNumber": int(p["part_number"]), "ETag": str(p["etag"])}
            if with_crc:
                entry["ChecksumCRC32"] = str(p["crc32"])
            listed.append(entry)
        expected_crc = composite_of([str(p["crc32"]) for p in ordered]) if with_crc else ""
        expected_etag = multipart_etag([str(p.get("md5", "")) for p in ordered])
        try:
            with map_s3_errors(what):
                reply = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=self._key(path), UploadId=str(handle["upload_id"]),
                    MultipartUpload={"Parts": listed})
        except (NotFound, Retryable):
            if self._is_committed(path, size=size, crc=expected_crc, etag=expected_etag):
                return  # committed before: a replayed commit, or a lost answer
            raise
        got_crc = str(reply.get("ChecksumCRC32") or "").split("-")[0]
        if expected_crc and not got_crc:
            with map_s3_errors(what):
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(path),
                                               ChecksumMode="ENABLED")
            got_crc = str(head.get("ChecksumCRC32") or "").split("-")[0]
            if not got_crc:
                log.warning("S3 kept no CRC-32 of the parts of key=%s; checked by the parts' ETags only",
                            self._key(path))
        if expected_crc and got_crc and got_crc != expected_crc:
            self._delete_mismatch(path, what)
            raise Fatal(f"{what}: S3 assembled an object whose composite CRC-32 {got_crc} is not the "
                        f"parts' {expected_crc}; it was deleted",
                        hint="a part was damaged or replaced in transit; run the activity again")
        got = str(reply.get("ETag", "")).strip('"').lower()
        if expected_etag and got and MULTIPART_ETAG.match(got) and got != expected_etag:
            self._delete_mismatch(path, what)
            raise Fatal(f"{what}: S3 assembled an object whose ETag {got} is not the parts' {expected_etag}; "
                        "it was deleted", hint="a part was replaced while committing; run the activity again")

    def _delete_mismatch(self, path: str, what: str) -> None:
        """A completed object that is not the parts sent must not stay visible."""
        log.error("S3 object does not match its parts; deleting it key=%s", self._key(path))
        try:
            with map_s3_errors(what):
                self.client.delete_object(Bucket=self.bucket, Key=self._key(path))
        except DmgError as exc:
            log.warning("could not delete the mismatched object key=%s error=%s", self._key(path), exc)

    def _is_committed(self, path: str, *, size: int, crc: str, etag: str) -> bool:
        """Whether the object at ``path`` is the one the parts make: its size, and its
        composite CRC-32 or multipart ETag when the parts give one (the size alone only for
        parts that give neither, as before CRC-32 parts)."""
        try:
            with map_s3_errors(self._what("stat", path)):
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(path),
                                               ChecksumMode="ENABLED")
        except DmgError:
            return False
        if int(head.get("ContentLength", -1)) != size:
            return False
        if crc:
            return str(head.get("ChecksumCRC32") or "").split("-")[0] == crc
        if etag:
            return str(head.get("ETag", "")).strip('"').lower() == etag
        return True

    def abort_distributed(self, path: str, handle: dict[str, Any]) -> None:
        """``AbortMultipartUpload``; an upload already gone is not an error."""
        try:
            with map_s3_errors(self._what("abort", path)):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(path),
                                                   UploadId=str(handle["upload_id"]))
        except NotFound:
            pass

    def close(self) -> None:
        """Nothing to release: the client is the process's (:mod:`dmg.connectors.s3clients`)
        and other stores' connections use it too."""
