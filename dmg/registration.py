"""A node's registration, kept on the node: ``<data dir>/nodes/<name>/node.json``.

Holds the cloud URL, gateway (name and the cloud's id for it), node name and the
node token (file mode 0600). A registration saved before gateway ids existed has
an empty ``gateway_id``.
Written once by ``dmg node register``; read by ``dmg node start`` and its worker.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from dmg.errors import BadInput, NotFound


@dataclass(frozen=True)
class NodeRegistration:
    cloud_url: str
    gateway: str
    node: str
    token: str
    gateway_id: str = ""

    def directory(self, data_dir: Path) -> Path:
        return node_dir(data_dir, self.node)


def node_dir(data_dir: Path, name: str) -> Path:
    return data_dir / "nodes" / name


def save(data_dir: Path, reg: NodeRegistration) -> Path:
    """Write atomically (staging file + rename), readable by the owner only."""
    directory = node_dir(data_dir, reg.node)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "node.json"
    staging = directory / ".node.json.tmp"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(reg), fh)
    os.replace(staging, path)
    return path


def registered_names(data_dir: Path) -> list[str]:
    root = data_dir / "nodes"
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/node.json"))


def load(data_dir: Path, name: str = "") -> NodeRegistration:
    """The registration of node ``name`` (or the only one registered in ``data_dir``)."""
    if not name:
        names = registered_names(data_dir)
        if not names:
            raise NotFound(f"no node is registered in {data_dir}",
                           hint="run `dmg node register --cloud URL --key KEY` first")
        if len(names) > 1:
            raise BadInput(f"several nodes are registered in {data_dir}: {', '.join(names)}",
                           hint="say which with --name")
        name = names[0]
    path = node_dir(data_dir, name) / "node.json"
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"node {name!r} is not registered in {data_dir}",
                       hint="run `dmg node register --cloud URL --key KEY --name NAME`") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path} is damaged ({exc.msg})", hint="register the node again") from exc
    return NodeRegistration(**body)
