"""Fixtures for the connector tests: real stores on 127.0.0.1 and one ``kit`` per store type."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.connectors.kits import KITS, StoreKit
from tests.servers.azurite import azure_container, azurite  # noqa: F401
from tests.servers.postgres import postgres_server  # noqa: F401
from tests.servers.s3 import s3_bucket, s3_server  # noqa: F401


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKit]:
    """A connector on a fresh, empty store of each type in turn."""
    store_kit = KITS[request.param](request, tmp_path)
    try:
        yield store_kit
    finally:
        store_kit.connector.close()
        engine = store_kit.extras.get("engine")
        if engine is not None:
            engine.dispose()
