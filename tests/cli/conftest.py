"""Fixtures for CLI tests: the real ``dmg`` executable and a real cloud server.

``dmg(*args)`` runs the installed executable (``.venv/bin/dmg``) with an
environment that points at a test's data dir and cloud; nothing reads the
developer's own ``DMG_*`` variables or ``.dmg`` directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dmg.cloud.server import CloudProcess, start_cloud_subprocess
from settings import Settings
from tests.conftest import require

DMG = Path(sys.executable).parent / "dmg"


def clean_environ(**dmg: str) -> dict[str, str]:
    """This process's environment without any ``DMG_*`` variable, plus ``dmg``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMG_")}
    env.update(dmg)
    return env


@dataclass
class DmgRunner:
    """Runs ``dmg`` as a user would, with a fixed set of ``DMG_*`` variables."""

    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    def __call__(self, *args: str, timeout: float = 60, stdin: str | None = None,
                 **extra_env: str) -> subprocess.CompletedProcess[str]:
        require(DMG.exists(), f"{DMG} is not installed (pip install -e .)")
        return subprocess.run([str(DMG), *args], capture_output=True, text=True, timeout=timeout,
                              env=clean_environ(**{**self.env, **extra_env}), cwd=self.cwd,
                              input=stdin if stdin is not None else "")

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *, contains: str = "") -> str:
    """The command failed with exactly one ``error: ...`` line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    if contains:
        assert contains in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def cli_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    """One cloud server for the CLI tests (SQLite in a temporary data dir)."""
    data_dir = tmp_path_factory.mktemp("cli-cloud")
    process = start_cloud_subprocess(Settings(data_dir=data_dir, log_level="WARNING"), bind="127.0.0.1:0")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def dmg(tmp_path: Path, cli_cloud: CloudProcess) -> DmgRunner:
    """``dmg`` talking to the session's cloud, with a data dir of the test's own."""
    data_dir = tmp_path / "dmg-data"
    data_dir.mkdir()
    return DmgRunner(env={"DMG_DATA_DIR": str(data_dir), "DMG_CLOUD_URL": cli_cloud.url,
                          "DMG_API_TOKEN": cli_cloud.api_token}, cwd=tmp_path)


@pytest.fixture
def offline_dmg(tmp_path: Path) -> DmgRunner:
    """``dmg`` with no cloud at all (a data dir of its own, a cloud URL nobody serves)."""
    from dmg.procs import free_port

    data_dir = tmp_path / "dmg-data"
    data_dir.mkdir()
    return DmgRunner(env={"DMG_DATA_DIR": str(data_dir),
                          "DMG_CLOUD_URL": f"http://127.0.0.1:{free_port()}"}, cwd=tmp_path)


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], str]:
    def write(name: str, body: Any) -> str:
        path = tmp_path / name
        path.write_text(body if isinstance(body, str) else json.dumps(body))
        return str(path)

    return write
