"""``dmg scale``: change running nodes' concurrent-job limit, live.

Sends the ``dmg_scale`` remote-control command (:mod:`workers.agent.scaling`) over the
site broker to each node's worker ``<node>@<gateway>``; the pool grows at once
and shrinks as its processes become idle, never killing a running shard. The new
limit is kept across restarts and used by the dispatcher at its next placement.
"""

from __future__ import annotations

from typing import Any

import click

from dmg.cli.common import current_settings, default_gateway, gateway_of_node, user_client
from dmg.cli.output import column, emit_table
from dmg.errors import BadInput, NotFound, Retryable

COLUMNS = [
    column("NODE", "node"),
    column("BEFORE", "before"),
    column("LIMIT", "limit"),
    column("POOL", "pool"),
    column("NOTE", "note"),
]


@click.command()
@click.argument("node_name", required=False)
@click.option("--concurrency", type=click.IntRange(min=1, max=1024), required=True,
              help="The new concurrent-job limit.")
@click.option("--gateway", "gateway_name", default=None,
              help="The gateway (default: the one with a node NODE); without NODE, every node of it "
                   "is scaled.")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for the nodes to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def scale(node_name: str | None, concurrency: int, gateway_name: str | None, timeout: float,
          as_json: bool) -> None:
    """Set NODE's concurrent-job limit (or every node's, with --gateway) without a restart.

    A shrink below the number of running shards takes effect as they finish.
    Needs the site broker: DMG_REDIS_URL (printed by `dmg up`).
    """
    settings = current_settings()
    with user_client() as client:
        gateway = (gateway_of_node(client, node_name, gateway_name) if node_name
                   else default_gateway(client, gateway_name))
        names = [str(n["name"]) for n in client.list_nodes(gateway)]
    if node_name:
        if node_name not in names:
            raise NotFound(f"gateway {gateway!r} has no node {node_name!r}",
                           hint=f"its nodes: {', '.join(names) or 'none'}")
        targets = [node_name]
    elif gateway_name:
        targets = names
    else:
        raise BadInput("say which node to scale", hint="dmg scale NODE --concurrency N, "
                       "or --gateway NAME to scale every node")
    rows = _send(settings, gateway, targets, concurrency, timeout)
    emit_table(rows, COLUMNS, as_json=as_json)
    if any(row.get("error") for row in rows):
        raise click.exceptions.Exit(1)


def _send(settings: Any, gateway: str, nodes: list[str], limit: int, timeout: float) -> list[dict[str, Any]]:
    from celery import Celery
    from kombu.exceptions import OperationalError

    from settings.celery import celery_config

    app = Celery("dmg-cli", set_as_current=False)
    app.conf.update(celery_config(settings.replace(gateway=gateway)))
    hostnames = {f"{node}@{gateway}": node for node in nodes}
    try:
        replies = app.control.broadcast("dmg_scale", arguments={"limit": limit},
                                        destination=list(hostnames), reply=True,
                                        timeout=timeout, limit=len(hostnames)) or []
    except OperationalError as exc:
        raise Retryable(f"cannot reach the site broker at {settings.redis_url}",
                        hint="set DMG_REDIS_URL to the site's Redis (dmg up prints it)") from exc
    finally:
        app.close()
    answered: dict[str, Any] = {}
    for reply in replies:
        answered.update(reply)
    rows = []
    for hostname, node in hostnames.items():
        body = answered.get(hostname)
        if body is None:
            rows.append({"node": node, "error": "no answer",
                         "note": f"no answer in {timeout:.0f} s: is the node running?"})
        elif "error" in body:
            rows.append({"node": node, "error": body["error"], "note": body["error"]})
        else:
            ok = body["ok"]
            pending = int(ok.get("pending_shrink", 0))
            note = (f"shrinks by {pending} more as running shards finish" if pending
                    else "in effect")
            rows.append({"node": node, **ok, "note": note})
    return rows
