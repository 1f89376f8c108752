"""``dmg credentials``: set, list, delete, re-sync and import the gateway's store secrets.

A secret is read from stdin or a hidden prompt (never argv), checked against its store
type, sealed here to the gateway key, and only the ciphertext goes to the cloud; the
dispatcher hands it to every node (:mod:`dispatcher.credsync`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from dmg.cli.common import default_gateway, user_client
from dmg.cli.output import column, computed, emit_table
from dmg.errors import BadInput, NotFound

GATEWAY = click.option("--gateway", "gateway_name", default=None,
                       help="The gateway (default: the only one the cloud has).")


@click.group()
def credentials() -> None:
    """Store secrets, synced to every node of a gateway, encrypted end to end."""


def _store(client: Any, name: str) -> Any:
    from dmg.connectors.base import StoreSpec

    for body in client.list_stores():
        if body.get("name") == name:
            return StoreSpec.from_json(body)
    raise NotFound(f"store {name!r} does not exist", hint="list the stores with `dmg store list`")


def _seal_and_set(client: Any, gateway: str, spec: Any, fields: Mapping[str, str]) -> dict[str, Any]:
    from dmg.credentials import cloudcalls, sealing
    from dmg.credentials.rules import check_fields, entry_name, needs_credential
    from dmg.credentials.vault import credential_payload

    if not needs_credential(spec):
        raise BadInput(f"store {spec.name!r} takes no credential (a {spec.type} store"
                       + (" with credential none)" if spec.type != "file" else ")"))
    entry = entry_name(spec)
    check_fields(spec.type, fields, where=f"the credential of store {spec.name!r}")
    public = cloudcalls.credential_key(client, gateway)
    sealed = sealing.seal(credential_payload(entry, fields), public)
    return cloudcalls.set_credential(client, gateway, entry, sealed=sealed, sealed_to=public)


@credentials.command("set")
@click.argument("store")
@GATEWAY
def set_credential(store: str, gateway_name: str | None) -> None:
    """Set the credential of STORE: fields from stdin (a JSON object or key=value lines),
    else a hidden prompt. The secret is sealed here; the cloud sees ciphertext only."""
    from dmg.credentials.typed import read_fields

    with user_client() as client:
        spec = _store(client, store)
        fields = read_fields(spec.type)
        gateway = default_gateway(client, gateway_name)
        result = _seal_and_set(client, gateway, spec, fields)
    click.echo(f"credential {result['store']} of gateway {gateway} set: version {result['version']} "
               "(the dispatcher hands it to every node: `dmg credentials list`)")


def _when(value: Any) -> str:
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _holders(row: dict[str, Any]) -> str:
    nodes = row.get("nodes") or {}
    return ", ".join(f"{n}=v{v}" if v is not None else f"{n}=-" for n, v in sorted(nodes.items())) or "-"


@credentials.command("list")
@GATEWAY
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_credentials(gateway_name: str | None, as_json: bool) -> None:
    """List the gateway's credentials: store, version, set when, and per node the version it holds."""
    from dmg.credentials import cloudcalls

    with user_client() as client:
        body = cloudcalls.list_credentials(client, default_gateway(client, gateway_name))
    if as_json:
        from dmg.cli.output import emit_json

        emit_json(body)
        return
    emit_table(body["credentials"], [column("STORE", "store"), column("VERSION", "version"),
                                     computed("SET (UTC)", lambda r: _when(r.get("set_at"))),
                                     computed("NODES (VERSION HELD)", _holders)],
               as_json=False, empty="no credential yet: dmg credentials set STORE")
    for node in body.get("nodes") or []:
        if str(node.get("credential_status", "")).startswith("out of sync"):
            click.echo(f"{node['name']}: {node['credential_status']}")


@credentials.command("delete")
@click.argument("store")
@GATEWAY
def delete_credential(store: str, gateway_name: str | None) -> None:
    """Delete the credential of STORE from the gateway (every node drops its copy)."""
    from dmg.credentials import cloudcalls

    with user_client() as client:
        gateway = default_gateway(client, gateway_name)
        cloudcalls.delete_credential(client, gateway, store)
    click.echo(f"credential {store} of gateway {gateway} deleted")


@credentials.command("sync")
@GATEWAY
def sync(gateway_name: str | None) -> None:
    """Hand every credential to every node again (the dispatcher's next round redoes all)."""
    from dmg.credentials import cloudcalls

    with user_client() as client:
        gateway = default_gateway(client, gateway_name)
        cloudcalls.request_sync(client, gateway)
    click.echo(f"credential sync of gateway {gateway} requested (`dmg credentials list` shows progress)")


@credentials.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@GATEWAY
def import_file(file: Path, gateway_name: str | None) -> None:
    """Move the [stores.NAME] tables of a credentials.toml FILE into the gateway's synced
    credentials (each checked against the type of the store that uses it)."""
    from dmg.connectors.base import StoreSpec
    from dmg.credentials.file import load_credentials
    from dmg.credentials.rules import entry_name, needs_credential

    loaded = load_credentials(file)
    if not loaded.exists:
        raise NotFound(f"{file} does not exist", hint="give the path of a credentials.toml")
    with user_client() as client:
        gateway = default_gateway(client, gateway_name)
        specs = [StoreSpec.from_json(b) for b in client.list_stores()]
        users = {entry_name(s): s for s in specs if needs_credential(s)}
        unused = sorted(set(loaded.stores) - set(users))
        if unused:
            raise BadInput(f"{file}: no store uses the credential [stores.{unused[0]}]",
                           hint="add that store first (`dmg store add`), or remove the table")
        for name, fields in sorted(loaded.stores.items()):
            result = _seal_and_set(client, gateway, users[name], fields)
            click.echo(f"credential {name} of gateway {gateway} set: version {result['version']}")
    click.echo(f"imported {len(loaded.stores)} credential(s); the plaintext file is no longer needed: "
               f"delete it now (rm {file})")
