"""The compose file and the Dockerfile, checked without Docker: `docker-compose config`
accepts the file; every dmg command, flag and DMG_* variable they use exists; secrets
reach only the processes that need them; each node has its own data volume."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from typing import Any

import pytest
from click.testing import CliRunner

from dmg.cli.main import cli
from settings import PRIVATE, Settings
from tests.conftest import require
from tests.containers import composekit as kit

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DMG_API_TOKEN": "user-token",
       "DMG_FLOWER_PASSWORD": "flower-password", "DMG_GATEWAY_KEY": "gateway-key"}
#: What the node services' scripts are given for their variables.
SCRIPT_VARIABLES = {"NODE": "node1", "GATEWAY_KEY": "gateway-key"}
SETTINGS_VARIABLES = {f"DMG_{f.name.upper()}" for f in dataclasses.fields(Settings) if f.name != "extra"}
SETTINGS_VARIABLES |= {"DMG_CONFIG"}  # read by settings.load, not a field


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    require(kit.docker_compose() is not None,
            "docker-compose is not installed (Debian package docker-compose)")
    return kit.compose_config(ENV)


def node_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in kit.dmg_services(config).items()
            if "dmg node start" in " ".join(kit.argv_of(s))}


def test_docker_compose_config_accepts_the_file(config: dict[str, Any]) -> None:
    assert {"redis", "cloud", "node1", "node2", "flower", "cli"} <= set(config["services"])


def test_a_missing_api_token_is_refused_by_name() -> None:
    require(kit.docker_compose() is not None, "docker-compose is not installed")
    done = kit.run_compose_config({k: v for k, v in ENV.items() if k != "DMG_API_TOKEN"})
    assert done.returncode != 0
    assert "set DMG_API_TOKEN" in done.stderr


def test_every_dmg_command_and_flag_exists(config: dict[str, Any]) -> None:
    invocations = kit.dmg_invocations(config, variables=SCRIPT_VARIABLES)
    # the cloud, both nodes (register + start), the documented cli commands, the image's CMD
    assert {"cloud", "Dockerfile CMD"} <= set(invocations)
    assert sum(1 for where in invocations if where.startswith("node")) == 4
    assert any(args[:2] == ["gateway", "create"] for args in invocations.values())
    runner = CliRunner()
    for where, args in invocations.items():
        # --help after the arguments: click still refuses an unknown command or option
        result = runner.invoke(cli, [*args, "--help"] if args != ["--help"] else args)
        assert result.exit_code == 0, f"{where}: dmg {' '.join(args)}: {result.output}"


def test_an_unknown_flag_would_be_caught() -> None:
    result = CliRunner().invoke(cli, ["node", "start", "--nmae", "node1", "--help"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_every_dmg_variable_is_a_setting(config: dict[str, Any]) -> None:
    used: dict[str, str] = {}
    for name, service in kit.dmg_services(config).items():
        for key in service.get("environment") or {}:
            used.setdefault(key, name)
        for word in re.findall(r"\bDMG_\w+", " ".join(kit.argv_of(service))):
            used.setdefault(word, name)
    for key in kit.dockerfile_env():
        used.setdefault(key, "Dockerfile ENV")
    dmg_vars = {k: where for k, where in used.items() if k.startswith("DMG_")}
    assert "DMG_REDIS_URL" in dmg_vars and "DMG_DATA_DIR" in dmg_vars
    unknown = {k: where for k, where in dmg_vars.items() if k not in SETTINGS_VARIABLES}
    assert not unknown, f"DMG_* variables that no setting reads: {unknown}"


def test_secrets_reach_only_the_processes_that_need_them(config: dict[str, Any]) -> None:
    private = {f"DMG_{name.upper()}" for name in PRIVATE}
    holders = {name: sorted(set(service.get("environment") or {}) & private)
               for name, service in kit.dmg_services(config).items()}
    # the users' token: the cloud (it checks it) and the cli (it sends it); no node, no Flower
    assert holders == {"cloud": ["DMG_API_TOKEN"], "cli": ["DMG_API_TOKEN"],
                       "node1": [], "node2": [], "flower": []}
    for name, service in kit.dmg_services(config).items():
        for key in service.get("environment") or {}:
            assert not re.search(r"CREDENTIAL|SECRET|REDIS_PASSWORD|ACCESS_KEY", key), (name, key)
    # the gateway key is for the one registration: the script drops it before the node runs
    for service in node_services(config).values():
        script = kit.argv_of(service)[2]
        assert script.index("unset GATEWAY_KEY") < script.index("exec dmg node start")


def test_the_image_bakes_in_no_secret() -> None:
    for word, rest in kit.dockerfile():
        if word in ("COPY", "ADD"):
            sources = rest.split()[:-1]
            assert all(s in ("pyproject.toml", "README.md", "settings", "dmg", "workers", "dispatcher")
                       for s in sources), rest
        if word in ("ENV", "ARG"):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|KEY|CREDENTIAL", rest, re.I), rest


def test_one_gateway_each_node_its_own_data_volume(config: dict[str, Any]) -> None:
    nodes = node_services(config)
    assert set(nodes) == {"node1", "node2"}
    data = {name: dict((t, s) for s, t in kit._volume_targets(svc))["/data"] for name, svc in nodes.items()}
    assert len(set(data.values())) == len(nodes), data
    for service in nodes.values():
        assert dict((t, s) for s, t in kit._volume_targets(service))["/share"] == "share"
    # one logical gateway: the same broker, cloud and key for every node
    for key in ("DMG_REDIS_URL", "DMG_CLOUD_URL", "GATEWAY_KEY"):
        assert len({svc["environment"][key] for svc in nodes.values()}) == 1, key
    assert {svc["environment"]["NODE"] for svc in nodes.values()} == set(nodes)


def test_the_dockerfile_ships_every_package_and_a_supported_python() -> None:
    project = tomllib.loads((kit.ROOT / "pyproject.toml").read_text())
    copied = {rest.split()[0] for word, rest in kit.dockerfile() if word == "COPY"}
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, pattern
    base = next(rest for word, rest in kit.dockerfile() if word == "FROM")
    version = re.search(r"python:(\d+)\.(\d+)", base)
    assert version is not None, base
    minimum = re.search(r">=(\d+)\.(\d+)", project["project"]["requires-python"])
    assert minimum is not None
    assert (int(version[1]), int(version[2])) >= (int(minimum[1]), int(minimum[2]))
    assert kit.dockerfile_exec("ENTRYPOINT") == ["dmg"]
    assert "dmg" in project["project"]["scripts"]
    exposed = {int(p) for word, rest in kit.dockerfile() if word == "EXPOSE" for p in rest.split()}
    assert exposed == {8050, 5555}
