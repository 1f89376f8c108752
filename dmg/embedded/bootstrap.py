"""Bootstrapping an embedded site in its cloud: the gateway and the node registrations.

Both steps are idempotent, so a site started again on the same data dir and cloud
database keeps what it had: :func:`ensure_gateway` creates the gateway only if the
cloud lacks it; :func:`register_node` keeps a registration that both the cloud and the
data dir hold (following the cloud to a new address), and registers the node afresh
when the cloud knows it but its token is lost here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from dmg import registration as local_registration
from dmg.errors import Conflict, DmgError, NotFound
from settings import Settings

if TYPE_CHECKING:
    from dmg.cloud.client import CloudClient


def ensure_gateway(client: CloudClient, gateway: str, *, echo: Callable[[str], None],
                   encryption: str = "none") -> dict[str, str]:
    """Create ``gateway`` unless the cloud has it, with the ``encryption`` mode; returns its
    two keys (``key1``, ``key2``). Conflict when the gateway has another mode and more than
    one node (a data dir started before with(out) ``--tls``)."""
    try:
        current = client.gateway(gateway)
    except NotFound:
        echo(f"creating gateway {gateway}")
        current = client.create_gateway(gateway)
    if current.get("encryption", "none") != encryption:
        try:
            client.set_encryption(gateway, encryption)
        except Conflict as exc:
            raise Conflict(f"gateway {gateway} of this data dir has encryption mode "
                           f"{current.get('encryption')}, not {encryption}: {exc.message}",
                           hint="start the site as before (with or without --tls), or use another "
                                "data dir") from None
    keys = client.gateway_keys(gateway)
    return {"key1": str(keys["key1"]), "key2": str(keys["key2"])}


def register_node(settings: Settings, name: str, *, gateway: str, key: str,
                  echo: Callable[[str], None]) -> None:
    """Register node ``name`` to ``gateway`` with ``key`` and save its registration in
    ``settings.data_dir`` (keeping a registration the cloud already knows)."""
    from dmg.cloud.client import CloudClient
    from dmg.version import __version__

    cloud_url, data_dir = settings.cloud_url, settings.data_dir
    try:
        local: local_registration.NodeRegistration | None = local_registration.load(data_dir, name)
    except (NotFound, DmgError):
        local = None
    from dmg.credentials.registering import register_with_key

    with CloudClient(cloud_url, ca=settings.cloud_ca) as client:
        try:
            body = register_with_key(client, data_dir, key=key, name=name, version=__version__)
        except Conflict:
            if local is not None and local.gateway == gateway:
                if local.cloud_url != cloud_url:
                    local_registration.save(data_dir, dataclasses.replace(local, cloud_url=cloud_url))
                return
            # known to the cloud, but its token is lost here
            with CloudClient(cloud_url, token=settings.api_token, ca=settings.cloud_ca) as user:
                user.remove_node(gateway, name)
            body = register_with_key(client, data_dir, key=key, name=name, version=__version__)
    local_registration.save(data_dir, local_registration.NodeRegistration(
        cloud_url=cloud_url, gateway=str(body["gateway"]), node=str(body.get("node") or name),
        token=str(body["token"]), gateway_id=str(body.get("gateway_id") or "")))
    echo(f"registered {name} to gateway {gateway}")
