"""Fixtures of the scale-out tests: the session's S3 (moto) and Azure (Azurite) servers."""

from tests.servers.azurite import azure_container, azurite  # noqa: F401
from tests.servers.s3 import s3_bucket, s3_server  # noqa: F401
