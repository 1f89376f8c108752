"""Open a store with this site's credential: what workers and the dispatcher call.

Where a store's credential comes from, first found wins:

1. the credential synced to this node (``dmg credentials set``; kept sealed in the
   node's :class:`~dmg.credentials.vault.NodeVault` and opened here, at run time);
2. the plaintext ``credentials.toml`` of the data dir (setups from before credential
   sync; ``dmg credentials import FILE`` moves it into the synced credentials).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.credentials.rules import check_fields, credential_for, entry_name, needs_credential, secret_values
from dmg.credentials.vault import NodeVault
from dmg.errors import DmgError
from dmg.logformat import hide_in_logs
from dmg.redaction import redact_values
from dmg.registration import node_dir
from settings import Settings


def open_store(spec: StoreSpec, *, settings: Settings) -> Connector:
    """The connector of ``spec``, given its credential from ``settings.credentials_path``.

    Raises what :func:`dmg.credentials.credential_for` and
    :func:`dmg.connectors.connector_for` raise; an error raised while building the
    connector never carries the secret (it is blanked out if a library echoed it).
    """
    credential = None
    if needs_credential(spec):  # else neither the vault nor the credentials file is looked at
        credential = synced_credential(spec, settings=settings)
        if credential is None:
            credential = credential_for(spec, path=settings.credentials_path)
        hide_in_logs(secret_values(credential))  # from now on, no log line of this process shows them
    try:
        return connector_for(spec, credential=credential)
    except DmgError as exc:
        if credential is None:
            raise
        secrets = secret_values(credential)
        raise type(exc)(redact(exc.message, secrets), hint=redact(exc.hint, secrets)) from None


def synced_credential(spec: StoreSpec, *, settings: Settings) -> Mapping[str, str] | None:
    """The credential of ``spec`` synced to this node (``settings.node_name``), checked
    against the store's type; None when the store needs none or this node holds none."""
    if not needs_credential(spec) or not settings.node_name:
        return None
    name = entry_name(spec)
    fields = NodeVault(node_dir(settings.data_dir, settings.node_name)).credential(name)
    if fields is not None:
        check_fields(spec.type, fields, where=f"the synced credential {name!r} of store {spec.name!r}")
    return fields


def redact(text: str, secrets: Iterable[str] | Mapping[str, str]) -> str:
    """``text`` with every secret (the secret values of a credential mapping, or the
    strings given) replaced by ``***``."""
    values = secret_values(secrets) if isinstance(secrets, Mapping) else list(secrets)
    return redact_values(text, values)
