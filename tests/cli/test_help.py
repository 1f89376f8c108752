"""``--help`` works on every command of the real executable, without any setting."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import click

from dmg.cli.lazygroup import subcommands
from dmg.cli.main import cli
from tests.cli.conftest import DmgRunner


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(subcommands(group).items()):
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_the_issue_commands_exist() -> None:
    paths = {" ".join(p) for p in command_paths()}
    assert {"cloud serve", "gateway create", "gateway keys", "gateway show", "node register", "node start",
            "node list", "node remove", "store add", "pipeline create", "pipeline run", "runs list",
            "runs show", "up", "demo"} <= paths


def test_help_on_every_command(offline_dmg: DmgRunner) -> None:
    paths = command_paths()
    # one process per command, four at a time: the run time is Python's start-up, not dmg's
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: offline_dmg(*p, "--help", DMG_HEARTBEAT_INTERVAL="not-a-number"),
                                paths))
    assert len(results) == len(paths) > 30
    for path, result in zip(paths, results, strict=True):
        assert result.returncode == 0, (path, result.stderr)
        assert result.stdout.startswith(f"Usage: dmg {' '.join(path)}".rstrip()), (path, result.stdout)
        assert result.stderr == ""


def test_table_commands_offer_json() -> None:
    tables = [("node", "list"), ("runs", "list"), ("runs", "show"), ("gateway", "list"), ("gateway", "show"),
              ("store", "list"), ("pipeline", "list")]
    for path in tables:
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            command = subcommands(command)[name]
        assert "as_json" in [p.name for p in command.params], path


def test_the_cli_imports_no_heavy_module_until_a_command_needs_it() -> None:
    import subprocess
    import sys

    heavy = ["celery", "kombu", "httpx", "sqlalchemy", "fastapi", "redis", "workers", "dispatcher"]
    code = ("import sys, dmg.cli.main; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
