"""What a node's processes import: each module is memory in every process that loads it
(README, Benchmarks: "Peak memory of a node copying one 4 GiB file").

Fresh interpreters import what the node agent (``dmg node start``: the runtime, the
dispatcher candidate, credential sync, store checks) and the Celery worker's main process
(:mod:`workers.celery_worker`, before its pool forks) import at start; neither may load
the cloud's server stack, a cloud store's SDK (imported only by the process that opens
such a store), or Celery's command line with its plugins.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

AGENT = ["dmg.cli.node_cmd", "dmg.cli.runtime", "dispatcher.loop", "dispatcher.credsync", "dmg.credentials",
         "dmg.credentials.nodesync", "dmg.credentials.vault", "workers.agent.node",
         "workers.agent.storecheck", "workers.agent.periodic", "workers.agent.upgrade", "dmg.cloud.client",
         "dmg.site.connection"]
#: workers.app's worker_init hook imports the rest before the pool forks.
WORKER = ["workers.celery_worker", "workers.app", "workers.tasks", "dmg.connectors.file", "dmg.transfer",
          "workers.run.shard", "celery.apps.worker", "celery.concurrency.prefork"]
NOT_IN_A_NODE = ["pydantic", "sqlalchemy", "fastapi", "starlette", "uvicorn", "alembic", "boto3", "botocore",
                 "azure", "flower", "tornado", "prompt_toolkit", "click_repl", "rich", "pygments",
                 "celery.bin", "httpx._main"]


def loaded(modules: list[str], *, also: tuple[str, ...] | list[str] = ()) -> list[str]:
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"heavy = {[*NOT_IN_A_NODE, *also]!r}\n"
        "print(json.dumps(sorted({h for h in heavy for m in sys.modules"
        " if sys.modules[m] is not None and (m == h or m.startswith(h + '.'))})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_node_agent_imports_no_server_stack_no_store_sdk() -> None:
    assert loaded(AGENT) == []


def test_the_node_agent_imports_no_celery_worker() -> None:
    """The agent sends tasks (the dispatcher) but runs none: Celery's worker package stays out."""
    assert loaded([*AGENT, "workers.agent.limitfile"], also=["celery.worker"]) == []


def test_the_celery_worker_imports_no_server_stack_no_store_sdk_no_celery_command_line() -> None:
    assert loaded(WORKER) == []


def test_the_check_sees_a_heavy_import() -> None:
    assert loaded(["pydantic", "dmg.httpxlite"]) == ["pydantic"]


def test_plain_httpx_still_loads_its_command_line() -> None:
    """The httpx bug dmg.httpxlite works around; once this fails, drop dmg.httpxlite."""
    assert "httpx._main" in loaded(["httpx"])


def test_the_worker_refuses_a_bad_argument_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "workers.celery_worker", "-n", "n1@gw", "-Q", "node.n1",
                           "-c", "0"], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--concurrency must be at least 1")
    assert "Traceback" not in done.stderr
