"""``DMG_LOG_FORMAT`` in real processes (:mod:`dmg.logformat`): JSON lines with the fields a
line names, text by default, and a store credential's secret on no line in either format
once the process opened the store; a format that does not exist is a one-line error.
(Every process of a real site logging JSON: tests/ha/test_metrics_site.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from settings import Settings, settings_environ

SECRET = "s3cr3t-Kq9Zx7Lw2Vb"
API_TOKEN = "dmgu_" + "T" * 40

CHILD = f"""
import logging
import settings
from dmg.cli.common import setup_logging
from dmg.connectors import StoreSpec
from dmg.credentials import open_store

s = settings.load()
setup_logging(s)
open_store(StoreSpec(name="lake", type="s3", location="s3://bucket/out",
                     options={{"region": "us-east-1"}}), settings=s)
log = logging.getLogger("dmg.example")
log.warning("connecting with %s shard=ar7-00002 attempt=3 node=n9", {SECRET!r})
log.info("token %s", s.api_token)
try:
    raise RuntimeError("refused: " + {SECRET!r})
except RuntimeError:
    log.exception("store check failed")
"""


def run_child(tmp_path: Path, log_format: str | None) -> subprocess.CompletedProcess[str]:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(f'[stores.lake]\naccess_key_id = "AKIAEXAMPLEEXAMPLE1"\n'
                           f'secret_access_key = "{SECRET}"\n')
    credentials.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMG_")}
    env.update(settings_environ(Settings(data_dir=tmp_path)))
    env.update(DMG_CREDENTIALS_FILE=str(credentials), DMG_API_TOKEN=API_TOKEN)
    env.pop("DMG_LOG_FORMAT", None)
    if log_format is not None:
        env["DMG_LOG_FORMAT"] = log_format
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])


def test_json_lines_carry_the_fields_and_never_the_secret(tmp_path: Path) -> None:
    done = run_child(tmp_path, "json")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stderr and API_TOKEN not in done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    mine = [line for line in lines if line["logger"] == "dmg.example"]
    assert len(mine) == 3, lines
    first, token, failure = mine
    assert {"time", "level", "logger", "message", "pid"} <= set(first)
    assert first["level"] == "WARNING" and first["message"].startswith("connecting with *** ")
    fields = (first["shard"], first["attempt"], first["activity_run"], first["node"])
    assert fields == ("ar7-00002", "3", "ar7", "n9")
    assert first["time"].endswith("Z")
    assert token["message"] == "token ***"
    assert failure["level"] == "ERROR" and "refused: ***" in failure["exception"]
    assert "Traceback" in failure["exception"]


def test_text_stays_the_default_and_hides_the_secret_too(tmp_path: Path) -> None:
    done = run_child(tmp_path, None)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stderr and API_TOKEN not in done.stderr
    assert "WARNING dmg.example: connecting with *** shard=ar7-00002" in done.stderr
    assert not done.stderr.lstrip().startswith("{")


@pytest.mark.parametrize("command", [["-m", "dmg.cloud", "serve", "--bind", "127.0.0.1:0"],
                                     ["-m", "dmg.cli", "cloud", "serve", "--bind", "127.0.0.1:0"]])
def test_an_unknown_format_is_one_line(tmp_path: Path, command: list[str]) -> None:
    env = {**os.environ, "DMG_DATA_DIR": str(tmp_path), "DMG_LOG_FORMAT": "xml"}
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == ["error: DMG_LOG_FORMAT='xml' is not a log format; use text or json"], done.stderr
