"""What ``dmg pipeline run --wait`` imports: the commands it runs, not the whole project.

Each check runs the real console-script entry point (``dmg.cli.fastpath:main``) in a
fresh interpreter (``sys.modules`` starts empty there) and lists which heavy packages it
loaded on the way. The wait itself (the fast path, an http:// cloud) loads neither click
nor httpx nor ssl: plain sockets (dmg/cloud/plainhttp.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import entry_points

from dmg.cli.main import cli
from dmg.cloud.client import CloudClient
from dmg.cloud.server import CloudProcess
from tests.cli.conftest import clean_environ
from tests.cloud.conftest import make_pipeline, make_site

#: Packages no step of ``pipeline run --wait`` needs (servers, ORM, workers, terminal UI).
HEAVY = ("pydantic", "sqlalchemy", "celery", "kombu", "redis", "rich", "boto3", "botocore", "azure",
         "fastapi", "starlette", "uvicorn", "workers", "dispatcher", "dmg.cloud.server", "dmg.transfer")

#: What the wait path loads neither: the command-line framework, the full HTTP client, TLS.
NOT_FOR_THE_WAIT = (*HEAVY, "click", "httpx", "httpcore", "h11", "anyio", "idna", "ssl", "email", "http",
                    "logging", "tomllib")

_PROBE = """
import json, sys
from dmg.cli.fastpath import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = {heavy!r}
loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
print(json.dumps({{"exit": code, "loaded": loaded}}), file=sys.__stdout__)
"""


def run_cli(*args: str, heavy: tuple[str, ...] = HEAVY, **env: str) -> dict[str, object]:
    """Run ``dmg ARGS`` in a fresh interpreter: its exit code and the ``heavy`` modules it loaded."""
    done = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=heavy), *args], capture_output=True,
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
    result = run_cli("pipeline", "run", name, "--wait", "--timeout", "0.3", heavy=NOT_FOR_THE_WAIT,
                     DMG_CLOUD_URL=cli_cloud.url, DMG_API_TOKEN=cli_cloud.api_token)
    # then it went the whole wait path (started, waited, timed out) on the slim imports
    assert result["exit"] == 1, result["stderr"]
    assert "started" in str(result["stderr"]) and "did not end within" in str(result["stderr"])
    assert result["loaded"] == []


def test_the_console_script_is_the_fast_path() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "dmg"]
    assert script.value == "dmg.cli.fastpath:main"


def test_the_fast_path_and_click_say_the_same(cli_cloud: CloudProcess) -> None:
    # given a pipeline whose run stays queued, and one that does not exist
    with CloudClient(cli_cloud.url, token=cli_cloud.api_token) as client:
        name = make_pipeline(client, make_site(client).gateway)
    env = clean_environ(DMG_CLOUD_URL=cli_cloud.url, DMG_API_TOKEN=cli_cloud.api_token)
    for args in (["pipeline", "run", "no-such-pipeline", "--wait"],
                 ["pipeline", "run", name, "--json", "--wait", "--timeout=0.2"]):
        # when the fast path (the console script) and click (`python -m dmg.cli`) run it
        fast, slow = (subprocess.run([*entry, *args], capture_output=True, text=True, timeout=60, env=env)
                      for entry in ([sys.executable, "-c", "from dmg.cli.fastpath import main; main()"],
                                    [sys.executable, "-m", "dmg.cli"]))
        # then both exit 1 with the same one-line error (run ids aside)
        assert fast.returncode == slow.returncode == 1, (fast.stderr, slow.stderr)
        assert fast.stdout == slow.stdout == ""
        shape = re.sub(r"[0-9a-f]{32}", "RUN", fast.stderr)
        assert shape == re.sub(r"[0-9a-f]{32}", "RUN", slow.stderr)
        assert shape.splitlines()[-1].startswith("error: "), shape


def test_other_forms_go_to_click() -> None:
    from dmg.cli.fastpath import recognize

    assert recognize(["pipeline", "run", "p", "--timeout", "2", "--wait"]) is not None
    for args in (["pipeline", "run", "p"], ["pipeline", "run", "p", "--wait", "--wait"],
                 ["--debug", "pipeline"], ["pipeline", "run", "p", "--wait", "--timeout", "-1"],
                 ["pipeline", "run", "-h", "--wait"],
                 ["pipeline", "run", "p", "q", "--wait"], ["pipeline", "run", "p", "--wait", "--help"]):
        assert recognize(args) is None, args
    usage = run_cli("pipeline", "run", "p", "--wait", "--timeout", "soon")
    assert usage["exit"] == 2 and "Invalid value for '--timeout'" in str(usage["stderr"])
