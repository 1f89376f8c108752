"""An Azure Blob server for tests: Azurite (npm, pinned in ``tests/emulators``).

Install once with ``npm ci --prefix tests/emulators``. Fixtures: ``azurite``
(session; one in-memory Azurite process on a free 127.0.0.1 port, stopped by pid
at the end) and ``azure_container`` (a fresh container per test). Azurite's
well-known development account is public knowledge, not a secret.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmg.procs import free_port, stop_process, wait_for_port
from tests.conftest import require

EMULATORS = Path(__file__).resolve().parent.parent / "emulators"
AZURITE_BLOB = EMULATORS / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


@dataclass(frozen=True)
class AzuriteServer:
    port: int

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.account_url};")

    @property
    def credential(self) -> dict[str, str]:
        """The connector's ``credential`` argument for the development account."""
        return {"connection_string": self.connection_string}


class AzuriteProcess:
    """One ``azurite-blob`` child process; :meth:`stop` stops it by pid (idempotent)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AzuriteProcess:
        log = open(self.workdir / "azurite.log", "wb")  # noqa: SIM115 - closed below
        try:
            self.proc = subprocess.Popen(
                [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                 "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        try:
            wait_for_port("127.0.0.1", self.port, timeout=60, proc=self.proc, what="azurite")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, group=True)
            self.proc = None


def start_azurite(workdir: Path) -> AzuriteProcess:
    require(AZURITE_BLOB.exists(),
            f"azurite is not installed in {EMULATORS} (run: npm ci --prefix tests/emulators)")
    return AzuriteProcess(workdir).start()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    process = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield AzuriteServer(process.port)
    finally:
        process.stop()


_containers = itertools.count(1)


@pytest.fixture
def azure_container(azurite: AzuriteServer) -> str:
    """A new, empty container on the session's Azurite."""
    from azure.storage.blob import BlobServiceClient

    name = f"dmg-test-{next(_containers)}"
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        service.create_container(name)
    return name
