"""Fixtures for the copy-engine tests: real stores on 127.0.0.1, real Redis, the real cloud."""

from __future__ import annotations

from tests.cloud.conftest import cloud, user  # noqa: F401
from tests.servers.azurite import azure_container, azurite  # noqa: F401
from tests.servers.postgres import postgres_server  # noqa: F401
from tests.servers.s3 import s3_bucket, s3_server  # noqa: F401
