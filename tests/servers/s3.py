"""An S3 server for tests: moto's ``ThreadedMotoServer`` on a free 127.0.0.1 port.

Fixtures: ``s3_server`` (session; one server) and ``s3_bucket`` (a fresh, empty
bucket per test). Import them into a ``conftest.py`` to use them.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dmg.procs import free_port, wait_for_port
from tests.conftest import require

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    region: str = REGION

    @property
    def credential(self) -> dict[str, str]:
        """Keys for the connector's ``credential`` argument (moto accepts any by default)."""
        return {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}

    def client(self) -> Any:
        """A plain boto3 client, for arranging and checking test data out of band."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def enforce_auth(self, enabled: bool) -> None:
        """Switch moto's IAM checks on (unknown keys are refused) or off (the default)."""
        body = b"0" if enabled else b"inf"
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset-auth", data=body,
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200


class MotoServer:
    """One ``ThreadedMotoServer`` (threads in this process); :meth:`stop` is idempotent."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._running = False

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server.start()
        self._running = True
        wait_for_port("127.0.0.1", self.port, timeout=30, what="moto S3 server")
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    require(importlib.util.find_spec("moto") is not None,
            "moto is not installed (pip install -e '.[dev]')")
    server = MotoServer().start()
    try:
        yield S3Server(server.endpoint_url)
    finally:
        server.stop()


_buckets = itertools.count(1)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on the session's server."""
    name = f"dmg-test-{next(_buckets)}"
    s3_server.client().create_bucket(Bucket=name)
    return name
