"""Store secrets, kept inside the site: never sent to the cloud in plaintext, never logged.

Synced credentials (``dmg credentials set``): sealed where they are typed to the gateway
key (:mod:`.sealing`), re-sealed by the dispatcher for each node
(:mod:`dispatcher.credsync`), kept sealed under the node's own key in its
:class:`~dmg.credentials.vault.NodeVault` (:mod:`.nodesync`), opened by
:func:`open_store` when a connector is built. See README "Credentials, sealed end to end".

The fallback of setups from before credential sync: each node reads a site-local TOML
file, ``settings.credentials_path``
(``DMG_CREDENTIALS_FILE``, else ``<data dir>/credentials.toml``), mode 0600, one
table per store::

    [stores.lake]                 # s3
    access_key_id = "AKIA..."
    secret_access_key = "..."

    [stores.blobs]                # azureblob: connection_string, or account_name +
    connection_string = "..."     # account_key, or sas_token

    [stores.warehouse]            # sql (postgresql, ...): password, optional username
    password = "..."

- :func:`open_store` builds the connector of a store with its credential: what
  workers and the dispatcher call instead of ``connector_for``.
- :func:`credential_for` finds a store's credential (``None`` when the store
  needs none); :func:`load_credentials` reads and checks the file.
- :func:`redact` blanks secrets out of a text before it leaves the node.

Errors (``dmg.errors``) name the file and the store, never a secret value.
"""

from __future__ import annotations

from dmg.credentials.file import CredentialFile, load_credentials
from dmg.credentials.rules import credential_for, needs_credential, secret_values
from dmg.credentials.stores import open_store, redact

__all__ = ["CredentialFile", "credential_for", "load_credentials", "needs_credential", "open_store",
           "redact", "secret_values"]
