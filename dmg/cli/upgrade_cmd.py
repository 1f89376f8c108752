"""``dmg node upgrade NAME`` and ``dmg gateway upgrade NAME``: restart nodes on the version
installed on their machines, one at a time, without stopping the gateway (:mod:`dmg.rolling`).

Install the new version on the machines first (``pip install --upgrade dmg``, a new image
pulled, or ``DMG_UPGRADE_COMMAND`` on the node that installs it): the request reaches each
node in its heartbeat's answer, and the node drains, restarts and rejoins.
"""

from __future__ import annotations

import click

from dmg.cli.common import default_gateway, gateway_of_node, user_client

#: Seconds a node may take to drain, restart and rejoin before the command gives up.
DEFAULT_TIMEOUT = 600.0

_TIMEOUT_HELP = "Seconds a node may take to drain, restart and come back before it is an error."


@click.command("upgrade")
@click.argument("name")
@click.option("--gateway", "gateway_name", default=None,
              help="The node's gateway (default: the one gateway with a node NAME).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the node is back on the new version.")
@click.option("--timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT, show_default=True,
              help=_TIMEOUT_HELP)
def node_upgrade(name: str, gateway_name: str | None, wait: bool, timeout: float) -> None:
    """Upgrade node NAME: it shows Upgrading, drains (running shards finish, queued ones move),
    restarts on the version installed on its machine and rejoins."""
    from dmg.rolling import upgrade_node

    with user_client() as client:
        gateway = gateway_of_node(client, name, gateway_name)
        if not wait:
            row = client.upgrade_node(gateway, name)
            click.echo(f"{name}: {row['status']} ({'; '.join(row.get('reasons') or [])})")
            return
        upgrade_node(client, gateway, name, timeout=timeout, echo=click.echo)


@click.command("upgrade")
@click.argument("name", required=False)
@click.option("--timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT, show_default=True,
              help=_TIMEOUT_HELP)
def gateway_upgrade(name: str | None, timeout: float) -> None:
    """Rolling upgrade of gateway NAME: each node in turn (the dispatcher last) drains, restarts on
    the installed version and must be back before the next one starts; a node that does not
    come back stops the roll with an error naming it."""
    from dmg.rolling import roll

    with user_client() as client:
        gateway = default_gateway(client, name)
        done = roll(client, gateway, timeout=timeout, echo=click.echo)
    click.echo(f"gateway {gateway} upgraded: {', '.join(done)}")
