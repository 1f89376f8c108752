"""Reading the compose file and the Dockerfile as Docker would, without Docker.

- :func:`compose_config`: ``docker-compose -f docker-compose.yml config`` (Debian's
  docker-compose), parsed: every service with its anchors merged and ``${VAR}`` filled in.
- :func:`dockerfile`: the Dockerfile's instructions (``FROM``, ``ENV``, ``COPY``, ...).
- :func:`dmg_invocations`: every ``dmg ...`` command line a service runs, and those the
  compose file's comments tell the user to run (``docker compose run --rm cli ...``).
- :class:`ProcessPlan`: a service as a plain process on this machine: its command and
  environment with the container's paths mapped to temporary directories and the
  services' host names and ports mapped to free ports on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
IMAGE = "dmg:latest"


def docker_compose() -> str | None:
    return shutil.which("docker-compose")


def run_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = docker_compose()
    assert binary is not None
    return subprocess.run([binary, "-f", str(COMPOSE), "config"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)


def compose_config(env: dict[str, str]) -> dict[str, Any]:
    done = run_compose_config(env)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_exec(word: str) -> list[str]:
    """The exec form (JSON list) of the Dockerfile's ENTRYPOINT or CMD."""
    found = [rest for w, rest in dockerfile() if w == word]
    assert found, f"the Dockerfile has no {word}"
    value = json.loads(found[-1])
    assert isinstance(value, list)
    return [str(v) for v in value]


def dmg_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in config["services"].items() if svc.get("image") == IMAGE}


def argv_of(service: dict[str, Any], *, run_args: tuple[str, ...] = ()) -> list[str]:
    """What the container runs: its entrypoint (else the image's) + its command (else the
    image's); ``run_args`` replace the command, as ``docker compose run SERVICE ARGS`` does."""
    entrypoint = service.get("entrypoint")
    if entrypoint is None:
        entrypoint = dockerfile_exec("ENTRYPOINT")
    command = list(run_args) if run_args else service.get("command")
    if command is None:
        command = dockerfile_exec("CMD") if "entrypoint" not in service else []
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    if isinstance(command, str):
        command = shlex.split(command)
    # `docker-compose config` writes a literal $ as $$ (its own escape)
    return [str(a).replace("$$", "$") for a in [*entrypoint, *command]]


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a one-line ``sh -c`` script (split at ; || && and pipes)."""
    return [shlex.split(part) for part in re.split(r";|\|\||&&|\|", script) if part.strip()]


def dmg_invocations(config: dict[str, Any], *, variables: dict[str, str]) -> dict[str, list[str]]:
    """``{where: dmg arguments}`` for every dmg command line the site runs or documents.

    ``$VAR`` in a shell script is replaced from ``variables``."""
    found: dict[str, list[str]] = {}
    for name, service in dmg_services(config).items():
        argv = argv_of(service)
        if argv[:2] == ["sh", "-c"]:
            script = re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), argv[2])
            for i, words in enumerate(shell_commands(script)):
                if words and words[0] == "exec":
                    words = words[1:]
                if words and words[0] == "dmg":
                    found[f"{name} (sh -c, command {i + 1})"] = words[1:]
        elif argv and argv[0] == "dmg":
            found[name] = argv[1:]
    for number, line in enumerate(COMPOSE.read_text().splitlines(), 1):
        match = re.search(r"docker compose run (?:--rm |-T )*cli ([a-z].*?)(?:\s+#.*)?$", line)
        if match:
            found[f"docker-compose.yml line {number}"] = shlex.split(match.group(1))
    found["Dockerfile CMD"] = dockerfile_exec("CMD")
    return found


# -- a service as a plain process ---------------------------------------------------------


@dataclass
class ProcessPlan:
    """A service's command line and environment, mapped onto this machine."""

    name: str
    argv: list[str]
    env: dict[str, str]


def _volume_targets(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(volume name, container path)`` of every volume the service mounts."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            out.append((str(volume["source"]), str(volume["target"])))
        else:
            source, target = str(volume).split(":")[:2]
            out.append((source, target))
    return out


def published_ports(config: dict[str, Any]) -> dict[str, list[int]]:
    """``{service: [container port, ...]}`` of the ports each service publishes."""
    out: dict[str, list[int]] = {}
    for name, service in config["services"].items():
        ports = []
        for port in service.get("ports") or []:
            ports.append(int(port["target"]) if isinstance(port, dict) else int(str(port).split(":")[-1]))
        out[name] = ports
    return out


class Mapper:
    """Maps a container's world onto 127.0.0.1 and a temporary directory.

    ``ports``: ``{(service, container port): local port}`` (every service's ports, Redis's
    6379 included); ``volumes``: ``{volume name: local directory}``; each service's
    ``/data`` without a named volume gets a directory of its own (Docker's anonymous one).
    """

    def __init__(self, *, ports: dict[tuple[str, int], int], volumes: dict[str, Path], scratch: Path,
                 bin_dir: Path) -> None:
        self.ports = ports
        self.volumes = volumes
        self.scratch = scratch
        self.bin_dir = bin_dir

    def _paths(self, name: str, service: dict[str, Any]) -> dict[str, Path]:
        paths = {target: self.volumes[source] for source, target in _volume_targets(service)}
        data_dir = dockerfile_env().get("DMG_DATA_DIR", "/data")
        paths.setdefault(data_dir, self.scratch / f"{name}-anonymous-data")
        for path in paths.values():
            path.mkdir(parents=True, exist_ok=True)
        return paths

    def text(self, name: str, service: dict[str, Any], value: str) -> str:
        for (host, port), local in self.ports.items():
            value = value.replace(f"{host}:{port}", f"127.0.0.1:{local}")
            if host == name:
                value = value.replace(f"0.0.0.0:{port}", f"127.0.0.1:{local}")
                value = value.replace(f"--port={port}", f"--port={local}")
        value = value.replace("--address=0.0.0.0", "--address=127.0.0.1")
        for target, path in sorted(self._paths(name, service).items(), key=lambda item: -len(item[0])):
            value = re.sub(rf"(?<![\w/.]){re.escape(target)}(?=/|\b|$)", str(path), value)
        return value

    def plan(self, name: str, service: dict[str, Any], *, extra_args: tuple[str, ...] = (),
             extra_env: dict[str, str] | None = None) -> ProcessPlan:
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        env = {"PATH": f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "HOME": str(self.scratch / f"{name}-home")}
        Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
        env.update(dockerfile_env())
        env.update({str(k): "" if v is None else str(v) for k, v in environment.items()})
        env.update(extra_env or {})
        env = {k: self.text(name, service, v) for k, v in env.items()}
        argv = [self.text(name, service, a) for a in argv_of(service, run_args=extra_args)]
        return ProcessPlan(name=name, argv=argv, env=env)
