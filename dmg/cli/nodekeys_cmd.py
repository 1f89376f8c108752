"""``dmg node backup``, ``restore`` and ``reset``: a node's identity and secrets."""

from __future__ import annotations

from pathlib import Path

import click

from dmg.cli.common import current_settings


def register(node: click.Group) -> None:
    node.add_command(backup)
    node.add_command(restore)
    node.add_command(reset)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Which registered node (default: the only one).")
def backup(file: Path, name: str | None) -> None:
    """Write a password-locked backup of this node (registration, keys, credentials) to FILE.

    The password comes from stdin (first line) or a hidden prompt, never from argv."""
    from dmg import registration as local_registration
    from dmg.credentials.backup import backup_bytes
    from dmg.credentials.typed import read_password
    from dmg.credentials.vault import write_private
    from dmg.errors import Conflict

    settings = current_settings()
    node = local_registration.load(settings.data_dir, name or settings.node_name).node
    if file.exists():
        raise Conflict(f"{file} exists", hint="give a new file name")
    locked = backup_bytes(settings.data_dir, node, read_password(confirm=True))
    write_private(file, locked)
    click.echo(f"node {node} backed up to {file} (restore it with `dmg node restore {file}`)")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def restore(file: Path) -> None:
    """Restore a node from a backup FILE into this data dir (then `dmg node start`).

    The password comes from stdin (first line) or a hidden prompt, never from argv."""
    from dmg.credentials.backup import restore_bytes
    from dmg.credentials.typed import read_password

    settings = current_settings()
    reg = restore_bytes(settings.data_dir, file.read_bytes(), read_password(confirm=False), what=str(file))
    click.echo(f"node {reg.node} of gateway {reg.gateway} restored into {settings.data_dir}")
    click.echo(f"next: dmg node start --name {reg.node}")


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(yes: bool) -> None:
    """Forget every node registration of this data dir and its local secrets (node keys,
    gateway key, credentials), so it can be registered to another gateway."""
    from dmg import registration as local_registration
    from dmg.credentials.backup import forget_nodes

    settings = current_settings()
    names = local_registration.registered_names(settings.data_dir)
    gateways = set()
    for name in names:
        gateways.add(local_registration.load(settings.data_dir, name).gateway)
    what = f"node(s) {', '.join(names)} of gateway {', '.join(sorted(gateways))}" if names else "no node"
    if not yes:
        click.confirm(f"forget {what} and the local secrets in {settings.data_dir}?", abort=True)
    forget_nodes(settings.data_dir)
    click.echo(f"forgot {what} in {settings.data_dir}")
    if names:
        click.echo("the cloud still lists them: `dmg node remove NAME --gateway GATEWAY` removes them there")
