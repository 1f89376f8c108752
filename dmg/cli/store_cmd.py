"""``dmg store``: data stores the gateway reads and writes."""

from __future__ import annotations

import click

from dmg.cli.common import read_json_file, user_client
from dmg.cli.output import column, emit_json, emit_table


@click.group()
def store() -> None:
    """Data stores: file, s3, azureblob, sql (never holding a secret)."""


@store.command()
@click.argument("file", metavar="FILE.json")
@click.option("--json", "as_json", is_flag=True, help="Print the stored definition as JSON.")
def add(file: str, as_json: bool) -> None:
    """Add the store defined in FILE.json: {"name", "type", "location", "options"}."""
    from dmg.cli.specs import check_store

    body = check_store(read_json_file(file, what="store"), source=file)
    with user_client() as client:
        stored = client.add_store(body)
    for warning in stored.get("warnings") or []:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        emit_json(stored)
    else:
        click.echo(f"store {body['name']} added ({body['type']} at {body['location']})")


@store.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_stores(as_json: bool) -> None:
    """List the stores the cloud holds."""
    with user_client() as client:
        rows = client.list_stores()
    emit_table(rows, [column("NAME", "name"), column("TYPE", "type"), column("LOCATION", "location")],
               as_json=as_json, empty="no store yet: dmg store add FILE.json")
