"""``dmg gateway``: logical gateways and their two authentication keys."""

from __future__ import annotations

from typing import Any

import click

from dmg.cli import upgrade_cmd
from dmg.cli.common import user_client
from dmg.cli.nodes_table import NODE_COLUMNS
from dmg.cli.output import column, emit_json, emit_table, human_time, reasons_text


@click.group()
def gateway() -> None:
    """Create logical gateways and manage their keys."""


def _print_keys(body: dict[str, Any]) -> None:
    click.echo(f"key1: {body['key1']}")
    click.echo(f"key2: {body['key2']}")


@gateway.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the gateway as JSON.")
def create(name: str, as_json: bool) -> None:
    """Create gateway NAME and print its two keys (register nodes with either)."""
    with user_client() as client:
        body = client.create_gateway(name)
    if as_json:
        emit_json(body)
        return
    click.echo(f"gateway {body.get('name', name)} created")
    _print_keys(body)
    click.echo(f"next: dmg node register --cloud URL --key <key1> --name NODE  (on each node of {name})")


@gateway.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_gateways(as_json: bool) -> None:
    """List the gateways the cloud holds."""
    with user_client() as client:
        rows = client.list_gateways()
    columns = [column("NAME", "name"), column("STATUS", "status"), column("REASONS", "reasons", reasons_text),
               column("VERSION", "version"), column("CREATED", "created_at", human_time)]
    emit_table(rows, columns, as_json=as_json, empty="no gateway yet: dmg gateway create NAME")


@gateway.command()
@click.argument("name")
@click.option("--regenerate", type=click.Choice(["key1", "key2"]), default=None,
              help="Replace this key; nodes registered with the old key stay registered.")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
def keys(name: str, regenerate: str | None, as_json: bool) -> None:
    """Print gateway NAME's two keys (or regenerate one)."""
    with user_client() as client:
        body = client.regenerate_key(name, regenerate) if regenerate else client.gateway_keys(name)
        if regenerate and not {"key1", "key2"} <= set(body or {}):
            body = client.gateway_keys(name)
    if as_json:
        emit_json({"key1": body["key1"], "key2": body["key2"]})
    else:
        _print_keys(body)


@gateway.command()
@click.argument("name")
@click.option("--mode", type=click.Choice(["tls", "none"]), required=True,
              help="tls: nodes reach the site broker (Redis) over TLS; none: plain text.")
def encryption(name: str, mode: str) -> None:
    """Set gateway NAME's encryption mode for node-to-node traffic.

    Only while the gateway has one node (remove the others, change the mode, register
    them again). A node whose own mode (DMG_REDIS_TLS_*, rediss://) differs is Inactive.
    """
    with user_client() as client:
        body = client.set_encryption(name, mode)
    click.echo(f"gateway {name}: encryption mode {body.get('encryption', mode)}")


@gateway.command()
@click.argument("name")
@click.argument("url", required=False, default="")
@click.option("--clear", is_flag=True, help="Remove the gateway's proxy: nodes connect directly.")
def proxy(name: str, url: str, clear: bool) -> None:
    """Set gateway NAME's HTTP proxy to URL (http://[user:password@]host:port).

    Every node applies it to its cloud and cloud-store (S3, Azure) traffic, never to the
    site broker, from its next heartbeat; a node that has not applied it yet is Inactive.
    """
    if clear == bool(url):
        raise click.UsageError("give either URL or --clear")
    with user_client() as client:
        body = client.set_proxy(name, "" if clear else url)
    shown = body.get("proxy") or ""
    click.echo(f"gateway {name}: proxy {shown}" if shown else f"gateway {name}: no proxy")


@gateway.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status(name: str, as_json: bool) -> None:
    """Print gateway NAME's status with its reasons, and each node's that is not Online."""
    with user_client() as client:
        body = client.gateway(name)
    nodes = list(body.get("nodes") or [])
    if as_json:
        emit_json({"name": body.get("name", name), "status": body.get("status"),
                   "reasons": body.get("reasons") or [],
                   "nodes": [{"name": n.get("name"), "status": n.get("status"),
                              "reasons": n.get("reasons") or []} for n in nodes]})
        return
    click.echo(f"gateway {body.get('name', name)}: {body.get('status', '-')}")
    for reason in body.get("reasons") or []:
        click.echo(f"  - {reason}")
    for node in nodes:
        click.echo(f"node {node.get('name')}: {node.get('status', '-')}")
        for reason in node.get("reasons") or []:
            click.echo(f"  - {reason}")


@gateway.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show(name: str, as_json: bool) -> None:
    """Show gateway NAME: status, version and its nodes."""
    with user_client() as client:
        body = client.gateway(name)
    if as_json:
        emit_json(body)
        return
    click.echo(f"gateway:  {body.get('name', name)}")
    click.echo(f"status:   {body.get('status', '-')}")
    for reason in body.get("reasons") or []:
        click.echo(f"          - {reason}")
    click.echo(f"version:  {body.get('version') or '-'}")
    click.echo(f"encryption: {body.get('encryption') or 'none'}")
    click.echo(f"proxy:    {body.get('proxy') or 'none'}")
    click.echo(f"created:  {human_time(body.get('created_at'))}")
    nodes = list(body.get("nodes") or [])
    click.echo(f"nodes:    {len(nodes)}")
    if nodes:
        click.echo("")
        emit_table(nodes, NODE_COLUMNS, as_json=False)


gateway.add_command(upgrade_cmd.gateway_upgrade)  # rolling upgrade (dmg.cli.upgrade_cmd)
