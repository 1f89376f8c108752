"""S3 errors and ETags: botocore's exceptions translated into :mod:`dmg.errors` at the
connector's boundary, and the ETag S3 gives a multipart object."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import botocore.exceptions as bex

from dmg.connectors import proxies as proxy
from dmg.errors import BadInput, DmgError, Fatal, NotFound, PermissionDenied, Retryable

MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-\d+$")
NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "404", "NotFound"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "AllAccessDisabled", "AccountProblem", "403", "401",
           "UnrecognizedClientException", "InvalidClientTokenId"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
              "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "503", "500",
              "502", "504", "429", "RequestLimitExceeded", "OperationAborted"}


@contextmanager
def map_s3_errors(what: str) -> Iterator[None]:
    """Translate botocore exceptions into :mod:`dmg.errors` (the connector's boundary)."""
    try:
        yield
    except DmgError:
        raise
    except bex.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in NOT_FOUND or (not code and status == "404"):
            detail = "bucket does not exist" if code == "NoSuchBucket" else "no such object"
            raise NotFound(f"{what}: {detail}") from exc
        if code in _DENIED or status in {"401", "403"}:
            raise PermissionDenied(
                f"{what}: access denied by S3 ({code or status})",
                hint="check this node's S3 credentials and the bucket policy",
            ) from exc
        if code in _TRANSIENT or status in _TRANSIENT:
            raise Retryable(f"{what}: S3 is busy or failing ({code or status})") from exc
        raise Fatal(f"{what}: S3 refused the request ({code or status})") from exc
    except bex.NoCredentialsError as exc:
        raise PermissionDenied(
            f"{what}: no S3 credentials found on this node",
            hint="set the store's credential or configure the AWS credential chain",
        ) from exc
    except bex.ProxyConnectionError as exc:
        raise Retryable(f"{what}: {proxy.proxy_problem(proxy.current(), 'S3')}") from exc
    except (bex.EndpointConnectionError, bex.ConnectionClosedError, bex.ConnectTimeoutError,
            bex.ReadTimeoutError, bex.IncompleteReadError) as exc:
        raise Retryable(f"{what}: S3 endpoint unreachable or timed out") from exc
    except (bex.HTTPClientError, bex.ConnectionError) as exc:
        raise Retryable(f"{what}: connection to S3 failed") from exc
    except bex.ParamValidationError as exc:
        raise BadInput(f"{what}: invalid request ({exc})") from exc
    except bex.BotoCoreError as exc:
        raise Fatal(f"{what}: {type(exc).__name__}") from exc


def multipart_etag(part_md5s: Sequence[str]) -> str:
    """The ETag S3 gives a multipart object: MD5 of the parts' binary MD5s, ``-<count>``;
    "" when a part's MD5 is unknown."""
    if not part_md5s or not all(MD5_ETAG.match(m) for m in part_md5s):
        return ""
    joined = b"".join(bytes.fromhex(m) for m in part_md5s)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(part_md5s)}"


def content_md5(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
