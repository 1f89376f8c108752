"""What every command shares: the settings, the cloud client, JSON input files.

The settings are loaded once per invocation, on first use, so ``--help`` works
even when a ``DMG_*`` variable is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import settings as settings_mod
from dmg.cli import cloudaccess
from dmg.cli.cloudaccess import api_token
from dmg.errors import BadInput, NotFound

if TYPE_CHECKING:
    from dmg.cloud.client import CloudClient

__all__ = ["CliState", "api_token", "current_settings", "default_gateway", "gateway_of_node",
           "read_json_file", "setup_logging", "state", "user_client"]


class CliState:
    """Per-invocation state kept in ``click.Context.obj``."""

    def __init__(self, *, debug: bool = False) -> None:
        self.debug = debug
        self._settings: settings_mod.Settings | None = None

    @property
    def settings(self) -> settings_mod.Settings:
        """The settings; raises :class:`settings.SettingsError` when one is unusable."""
        if self._settings is None:
            self._settings = settings_mod.load()
        return self._settings


def state() -> CliState:
    ctx = click.get_current_context()
    obj = ctx.find_object(CliState)
    if obj is None:  # a command invoked on its own (tests of a sub-group)
        obj = ctx.ensure_object(CliState)
    return obj


def current_settings() -> settings_mod.Settings:
    return state().settings


def user_client(settings: settings_mod.Settings | None = None) -> CloudClient:
    """A cloud client authenticated as a user (:func:`dmg.cli.cloudaccess.user_client`)."""
    return cloudaccess.user_client(settings or current_settings())


def read_json_file(path: str, *, what: str) -> dict[str, Any]:
    """Parse ``path`` as one JSON object; BadInput/NotFound with the line and column."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist", hint=f"give the path of a {what} JSON file") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory", hint=f"give the path of a {what} JSON file") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not UTF-8 text", hint=f"a {what} is a JSON file") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       hint=f"fix the {what} file") from None
    if not isinstance(body, dict):
        raise BadInput(f"{path} must hold one JSON object, not a {type(body).__name__}",
                       hint=f"a {what} is written as {{...}}")
    return body


def default_gateway(client: CloudClient, given: str | None) -> str:
    """``given``, else the only gateway the cloud has; BadInput when that is ambiguous."""
    if given:
        return given
    names = sorted(str(g["name"]) for g in client.list_gateways())
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFound("the cloud has no gateway", hint="create one with `dmg gateway create NAME`")
    raise BadInput(f"the cloud has several gateways: {', '.join(names)}", hint="say which with --gateway")


def gateway_of_node(client: CloudClient, node: str, given: str | None) -> str:
    """The gateway of node ``node``: ``given``, else the only gateway the cloud has, else
    the one gateway with a node of that name. NotFound when none has it; BadInput, naming
    the gateways, when several do."""
    if given:
        return given
    names = sorted(str(g["name"]) for g in client.list_gateways())
    if len(names) <= 1:
        return default_gateway(client, None)
    holders = [name for name in names if any(str(n.get("name")) == node for n in client.list_nodes(name))]
    if len(holders) == 1:
        return holders[0]
    if not holders:
        raise NotFound(f"no gateway has a node {node!r} (gateways: {', '.join(names)})",
                       hint="list the nodes with `dmg node list --gateway NAME`")
    raise BadInput(f"node {node!r} is in several gateways: {', '.join(holders)}",
                   hint="say which with --gateway")


def setup_logging(settings: settings_mod.Settings, *, secrets: tuple[str, ...] = ()) -> None:
    """Log to stderr at ``DMG_LOG_LEVEL`` in ``DMG_LOG_FORMAT`` (:func:`dmg.logsetup.setup_logging`)."""
    from dmg.logsetup import setup_logging as setup

    setup(settings, secrets=secrets)
