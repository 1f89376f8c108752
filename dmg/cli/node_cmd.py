"""``dmg node``: register, start, list, drain, upgrade and remove the nodes of a gateway."""

from __future__ import annotations

import sys

import click

from dmg import registration as local_registration
from dmg.cli import drain_cmd, history_cmd, nodekeys_cmd, upgrade_cmd
from dmg.cli.common import current_settings, default_gateway, setup_logging, user_client
from dmg.cli.nodes_table import NODE_COLUMNS
from dmg.cli.output import emit_table
from dmg.errors import BadInput, Conflict, NotFound


@click.group()
def node() -> None:
    """Nodes: the machines of a gateway (every node is a worker)."""


def _key_from_stdin() -> str:
    """The gateway key from stdin's first line, or a hidden prompt on a terminal."""
    if sys.stdin.isatty():
        return str(click.prompt("gateway key", hide_input=True))
    key = sys.stdin.readline().strip()
    if not key:
        raise BadInput("no gateway key on stdin",
                       hint="pipe one in, or pass --key KEY (dmg gateway keys NAME shows them)")
    return key


@node.command()
@click.option("--cloud", "cloud_url", metavar="URL", default=None,
              help="The cloud's URL (default: DMG_CLOUD_URL).")
@click.option("--key", default="-", show_default=True, metavar="KEY",
              help="One of the gateway's two keys; '-' reads it from stdin (a hidden prompt on a "
                   "terminal), which keeps it off the command line.")
@click.option("--name", default=None, help="This node's name (default: the host name).")
def register(cloud_url: str | None, key: str, name: str | None) -> None:
    """Register this machine as a node of the gateway that KEY belongs to.

    Saves the registration (cloud URL, gateway, node token) under
    <data dir>/nodes/NAME/node.json, readable by the owner only.
    """
    from dmg.cloud.client import CloudClient
    from dmg.credentials.registering import register_with_key
    from dmg.version import __version__

    settings = current_settings()
    cloud_url = cloud_url or settings.cloud_url
    name = name or settings.default_node_name
    _refuse_if_registered(settings.data_dir, name)
    if key == "-":
        key = _key_from_stdin()
    with CloudClient(cloud_url, ca=settings.cloud_ca) as client:
        body = register_with_key(client, settings.data_dir, key=key.strip(), name=name, version=__version__)
    registration = local_registration.NodeRegistration(
        cloud_url=cloud_url, gateway=str(body["gateway"]), node=str(body.get("node") or name),
        token=str(body["token"]), gateway_id=str(body.get("gateway_id") or ""))
    path = local_registration.save(settings.data_dir, registration)
    click.echo(f"node {registration.node} registered to gateway {registration.gateway} ({path})")
    click.echo(f"next: dmg node start --name {registration.node}")


def _refuse_if_registered(data_dir: object, name: str) -> None:
    from pathlib import Path

    try:
        existing = local_registration.load(Path(str(data_dir)), name)
    except NotFound:
        return
    raise Conflict(f"node {name!r} is already registered here, to gateway {existing.gateway!r}",
                   hint=f"remove it first with `dmg node remove {name}`, or pick another --name")


@node.command()
@click.option("--name", default=None, help="Which registered node to run (default: the only one).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Concurrent jobs limit, kept across restarts (default: the last limit set with "
                   "`dmg scale`, else DMG_NODE_CONCURRENCY, else sized to the machine).")
def start(name: str | None, concurrency: int | None) -> None:
    """Run this node in the foreground: its Celery worker and a dispatcher candidate.

    Stops cleanly on Ctrl-C or SIGTERM: running shards finish or are re-placed.
    """
    settings = current_settings()
    registration = local_registration.load(settings.data_dir, name or settings.node_name)
    settings = settings.replace(
        node_name=registration.node, cloud_url=registration.cloud_url,
        node_concurrency=concurrency if concurrency is not None else settings.node_concurrency)
    if concurrency is not None:  # the flag sets the node's limit, as `dmg scale` would
        from workers.agent.limitfile import persist_limit

        persist_limit(local_registration.node_dir(settings.data_dir, registration.node), concurrency)
    setup_logging(settings.replace(gateway=settings.gateway or registration.gateway),
                  secrets=(registration.token,))
    from dmg.cli.runtime import run_node
    from dmg.cloud.client import check_cloud_certificate
    from dmg.site.connection import check_broker_certificate

    check_broker_certificate(settings)  # a wrong CA or host name: one line, exit 1
    check_cloud_certificate(registration.cloud_url, ca=settings.cloud_ca)

    run_node(settings, registration)


@node.command("list")
@click.option("--gateway", "gateway_name", default=None,
              help="The gateway (default: the only one the cloud has).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--watch", is_flag=True, help="Redraw the table every --every seconds until Ctrl-C.")
@click.option("--every", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="With --watch: seconds between two redraws.")
def list_nodes(gateway_name: str | None, as_json: bool, watch: bool, every: float) -> None:
    """List a gateway's nodes: status and reasons, version, role, load, what sized the node's
    limit (cgroup, host, setting, scaled), last heartbeat."""
    empty = "no node yet: dmg node register --cloud URL --key KEY"
    if watch:
        if as_json:
            raise click.UsageError("--watch draws a table; leave out --json")
        from dmg.cli.output import render_table
        from dmg.cli.watch import watch as watch_view

        with user_client() as client:
            watched = default_gateway(client, gateway_name)

            def render(terminal: bool) -> str:
                rows = client.list_nodes(watched)
                return render_table(rows, NODE_COLUMNS, terminal=terminal) if rows else empty

            watch_view(render, every=every)
        return
    with user_client() as client:
        name = default_gateway(client, gateway_name)
        rows = client.list_nodes(name)
        gateway = client.gateway(name) if rows and not as_json else {}
    emit_table(rows, NODE_COLUMNS, as_json=as_json,
               empty=empty)
    if gateway:  # the version the nodes' VERSION column is compared with
        click.echo(f"gateway {name}: {gateway.get('status')}, version {gateway.get('version') or '-'} "
                   "(the version most nodes run)")


drain_cmd.register(node)  # drain, undrain, remove (dmg.cli.drain_cmd)
nodekeys_cmd.register(node)  # backup, restore, reset (dmg.cli.nodekeys_cmd)
node.add_command(upgrade_cmd.node_upgrade)  # dmg.cli.upgrade_cmd
history_cmd.register(node)  # history (dmg.cli.history_cmd)
