"""``dmg node drain | undrain | remove``: take a node out of service without losing work.

The request reaches the node through the site's broker (``DMG_REDIS_URL``): the
command sets the node's drain flag in the site state (``SiteState.set_drain``).
The dispatcher reads the flags before every placement round and places nothing
new on a flagged node; the node's agent reports the flag as ``draining`` in its
heartbeats, so the cloud shows it (status Upgrading). Run these inside the site,
on any machine that reaches its Redis.

- ``drain NAME``: flag the node; the shards queued on it and not started move to
  other nodes at once (new attempts); then wait until it runs none.
- ``undrain NAME``: let it take work again.
- ``remove NAME``: refuse while shards are queued or running on the node, unless
  ``--force``: then they get new attempts elsewhere (its own copies are fenced off
  and cannot commit). The node is flagged removed (a process of it still running
  gets no work: stop it), forgotten by the site state and removed from the cloud.
  When the broker cannot be reached, the cloud's view decides (a node that is not
  Offline and reports running shards is refused without ``--force``), and the
  dispatcher moves its work once it sees the node Offline.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from dmg import registration as local_registration
from dmg.cli.common import current_settings, gateway_of_node, user_client
from dmg.errors import BrokerError, Conflict, NotFound, Retryable

if TYPE_CHECKING:
    from dmg.site.state import SiteState
    from settings import Settings

#: Seconds the CLI waits for the site's broker before it calls it unreachable.
BROKER_TIMEOUT = 2.0
#: Seconds between two looks at a draining node.
POLL = 0.5

_GATEWAY_HELP = ("The node's gateway (default: from this machine's registration, else the one "
                 "gateway with a node NAME).")


def _gateway(settings: Settings, name: str, given: str | None) -> str:
    if given:
        return given
    try:
        return local_registration.load(settings.data_dir, name).gateway
    except NotFound:
        with user_client(settings) as client:
            return gateway_of_node(client, name, None)


def _site_state(settings: Settings, gateway: str) -> SiteState:
    from dmg.site.connection import redis_client
    from dmg.site.state import SiteState

    return SiteState(redis_client(settings, timeout=BROKER_TIMEOUT), gateway)


def _broker_unreachable(exc: Exception) -> Retryable:
    # redis-py's class name (the cause), as before the BrokerError boundary
    return Retryable(f"cannot reach the site's broker ({type(exc.__cause__ or exc).__name__})",
                     hint="run this inside the site, with DMG_REDIS_URL set to the site's Redis")


def work_on(state: SiteState, node: str) -> set[str]:
    """Shards queued or running on ``node``."""
    return state.queued(node) | state.running(node)


def move_work(state: SiteState, node: str, *, queued_only: bool) -> list[str]:
    """Requeue the shards on ``node``: only those not started with ``queued_only`` (a
    drain), else all of them (a removal)."""
    from dmg.attempt_ends import NODE_DRAINED, NODE_REMOVED
    from dmg.site.attempts import requeue

    shards = state.queued(node) if queued_only else work_on(state, node)
    reason = NODE_DRAINED if queued_only else NODE_REMOVED
    return [s for s in sorted(shards) if requeue(state, s, node, reason=reason) > 0]


@click.command()
@click.argument("name")
@click.option("--gateway", "gateway_name", default=None, help=_GATEWAY_HELP)
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until no shard runs on the node.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Give up waiting after this long (default: wait as long as it takes).")
def drain(name: str, gateway_name: str | None, wait: bool, timeout: float | None) -> None:
    """Stop placing work on node NAME and wait for its running shards to finish.

    Shards queued on it and not started yet move to other nodes at once. The node
    stays drained (also across restarts) until `dmg node undrain NAME`.
    """

    settings = current_settings()
    gateway = _gateway(settings, name, gateway_name)
    state = _site_state(settings, gateway)
    try:
        state.set_drain(name)
        moved = move_work(state, name, queued_only=True)
        click.echo(f"node {name} drained: no new work is placed on it"
                   + (f"; {len(moved)} queued shard(s) moved to other nodes" if moved else ""))
        if not wait:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = -1
        while left := work_on(state, name):
            if len(left) != shown:
                click.echo(f"waiting for {len(left)} shard(s) on {name}: {', '.join(sorted(left)[:5])}"
                           + (" ..." if len(left) > 5 else ""))
                shown = len(left)
            if deadline is not None and time.monotonic() > deadline:
                raise Retryable(f"node {name} still has {len(left)} shard(s) after {timeout:g} s",
                                hint=f"wait longer, or move them with `dmg node remove {name} --force`")
            time.sleep(POLL)
    except BrokerError as exc:
        raise _broker_unreachable(exc) from None
    finally:
        state.redis.close()
    click.echo(f"node {name} runs no shard; stop it, or `dmg node remove {name}`")


@click.command()
@click.argument("name")
@click.option("--gateway", "gateway_name", default=None, help=_GATEWAY_HELP)
def undrain(name: str, gateway_name: str | None) -> None:
    """Let node NAME take work again after `dmg node drain`."""

    settings = current_settings()
    state = _site_state(settings, _gateway(settings, name, gateway_name))
    try:
        was = state.clear_drain(name)
    except BrokerError as exc:
        raise _broker_unreachable(exc) from None
    finally:
        state.redis.close()
    click.echo(f"node {name} takes work again" if was else f"node {name} was not drained")


@click.command()
@click.argument("name")
@click.option("--gateway", "gateway_name", default=None, help=_GATEWAY_HELP)
@click.option("--force", is_flag=True, help="Remove it even while it has work: its shards move elsewhere.")
def remove(name: str, gateway_name: str | None, force: bool) -> None:
    """Remove node NAME from its gateway (and forget its registration on this machine).

    Refused while shards are queued or running on it, unless --force; drain it
    first with `dmg node drain NAME` to let them finish.
    """

    settings = current_settings()
    try:
        local: local_registration.NodeRegistration | None = local_registration.load(settings.data_dir, name)
    except NotFound:
        local = None
    with user_client() as client:
        if gateway_name is None and local is not None:
            gateway_name = local.gateway
        gateway = gateway_of_node(client, name, gateway_name)
        rows = client.list_nodes(gateway)
        if not any(r.get("name") == name for r in rows):
            raise NotFound(f"node {name!r} is not registered in gateway {gateway!r}",
                           hint=f"list its nodes with `dmg node list --gateway {gateway}`")
        state = _site_state(settings, gateway)
        try:
            moved = _take_off(state, name, force=force)
            broker = True
        except BrokerError:
            moved, broker = [], False
            _check_cloud_view(rows, name, force=force)
        finally:
            state.redis.close()
        client.remove_node(gateway, name)
        if broker:
            state = _site_state(settings, gateway)
            try:
                state.forget_node(name)
            except BrokerError:
                pass
            finally:
                state.redis.close()
    if local is not None and local.gateway == gateway:
        (local_registration.node_dir(settings.data_dir, name) / "node.json").unlink(missing_ok=True)
    click.echo(f"node {name} removed from gateway {gateway}"
               + (f"; {len(moved)} shard(s) moved to other nodes" if moved else ""))
    if not broker and force:
        click.echo("warning: the site's broker is unreachable from here; the node's work moves once "
                   "the dispatcher sees it Offline", err=True)


def _take_off(state: SiteState, name: str, *, force: bool) -> list[str]:
    """Refuse (Conflict) or flag the node removed and move its work; raises BrokerError."""
    work = work_on(state, name)
    if work and not force:
        raise Conflict(f"node {name} has {len(work)} shard(s) queued or running",
                       hint=f"drain it first (`dmg node drain {name}`), or move its work with --force")
    state.set_drain(name, "removed")
    return move_work(state, name, queued_only=False)


def _check_cloud_view(rows: list[dict[str, Any]], name: str, *, force: bool) -> None:
    row = next((r for r in rows if r.get("name") == name), None)
    if row is None or force:
        return
    if row.get("status") != "Offline" and int(row.get("running") or 0) > 0:
        raise Conflict(f"node {name} reports {row['running']} running shard(s) and the site's broker "
                       "cannot be reached to move them",
                       hint=f"drain it first (`dmg node drain {name}`), or pass --force")


COMMANDS = (drain, undrain, remove)


def register(group: click.Group) -> None:
    """Add :data:`COMMANDS` to ``group`` (the ``dmg node`` group)."""
    for command in COMMANDS:
        group.add_command(command)
