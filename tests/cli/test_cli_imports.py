"""What ``dmg pipeline run --wait`` imports: the commands it runs, not the whole project.

Each check runs the real CLI entry point in a fresh interpreter (``sys.modules`` starts
empty there) and lists which heavy packages it loaded on the way.
"""

from __future__ import annotations

import json
import subprocess
import sys

from dmg.cli.main import cli
from dmg.cloud.client import CloudClient
from dmg.cloud.server import CloudProcess
from tests.cli.conftest import clean_environ
from tests.cloud.conftest import make_pipeline, make_site

#: Packages no step of ``pipeline run --wait`` needs (servers, ORM, workers, terminal UI).
HEAVY = ("pydantic", "sqlalchemy", "celery", "kombu", "redis", "rich", "boto3", "botocore", "azure",
         "fastapi", "starlette", "uvicorn", "workers", "dispatcher", "dmg.cloud.server", "dmg.transfer")

_PROBE = """
import json, sys
from dmg.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = {heavy!r}
loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
print(json.dumps({{"exit": code, "loaded": loaded}}), file=sys.__stdout__)
"""


def run_cli(*args: str, **env: str) -> dict[str, object]:
    """Run ``dmg ARGS`` in a fresh interpreter: its exit code and the heavy modules it loaded."""
    done = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args], capture_output=True,
                          text=True, timeout=60, env=clean_environ(**env))
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def test_pipeline_run_help_loads_no_heavy_module() -> None:
    result = run_cli("pipeline", "run", "--help")
    assert result["exit"] == 0, result["stderr"]
    assert result["loaded"] == []


def test_the_top_help_lists_every_command_lazily_loaded() -> None:
    result = run_cli("--help")
    assert result["exit"] == 0, result["stderr"]
    assert "pydantic" not in result["loaded"] and "sqlalchemy" not in result["loaded"]
    assert {"cloud", "gateway", "node", "pipeline", "runs", "up", "demo"} <= set(cli.list_commands(None))  # type: ignore[arg-type]


def test_the_wait_path_loads_no_heavy_module(cli_cloud: CloudProcess) -> None:
    # given a pipeline of a gateway with no node running: its run stays queued
    with CloudClient(cli_cloud.url, token=cli_cloud.api_token) as client:
        site = make_site(client)
        name = make_pipeline(client, site.gateway)
    # when the user waits for it (long-polls, then gives up after its timeout)
    result = run_cli("pipeline", "run", name, "--wait", "--timeout", "0.3",
                     DMG_CLOUD_URL=cli_cloud.url, DMG_API_TOKEN=cli_cloud.api_token)
    # then it went the whole wait path (started, waited, timed out) on the slim imports
    assert result["exit"] == 1, result["stderr"]
    assert "started" in str(result["stderr"]) and "did not end within" in str(result["stderr"])
    assert result["loaded"] == []
