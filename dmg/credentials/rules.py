"""Which stores need a credential, and what a store type's credential holds.

A store needs one from the site's file unless it is a ``file`` store, an SQLite
database, or its options say ``"credential": "none"`` (then the connector uses
what the node offers without a secret: the AWS credential chain, an anonymous
Azure client, a database that trusts the node). Its entry is
``[stores.<store name>]``, or ``[stores.<name>]`` for ``"credential": "<name>"``
(several stores may share one entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dmg.connectors.base import StoreSpec
from dmg.credentials.file import load_credentials
from dmg.errors import BadInput

#: Keys a credential may hold, by store type.
ALLOWED: dict[str, tuple[str, ...]] = {
    "s3": ("access_key_id", "secret_access_key", "session_token"),
    "azureblob": ("connection_string", "account_name", "account_key", "sas_token"),
    "sql": ("username", "password"),
}
#: What must be present: every key of one of the alternatives.
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "s3": (("access_key_id", "secret_access_key"),),
    "azureblob": (("connection_string",), ("account_key",), ("sas_token",)),
    "sql": (("password",),),
}
NONE = "none"
#: Keys that name rather than hide (shown in messages as they are).
NOT_SECRET = frozenset({"username", "account_name"})


def entry_name(spec: StoreSpec) -> str:
    """The ``[stores.<name>]`` entry holding the secret of ``spec``."""
    named = spec.options.get("credential")
    if named is None or named == "":
        return spec.name
    if not isinstance(named, str):
        raise BadInput(f"store {spec.name!r}: option credential must be a string",
                       hint='"none", or the name of an entry of the credentials file')
    return named


def needs_credential(spec: StoreSpec) -> bool:
    """True when ``spec`` takes its secret from the site's credentials file."""
    if entry_name(spec) == NONE or spec.type not in ALLOWED:
        return False
    return not (spec.type == "sql" and spec.location.strip().lower().startswith("sqlite"))


def credential_for(spec: StoreSpec, *, path: Path) -> Mapping[str, str] | None:
    """The credential of ``spec`` from the file at ``path``, checked against its type;
    ``None`` when the store needs none. NotFound when the file or its entry is
    missing, PermissionDenied for a file open to others, BadInput for a malformed
    entry (the messages name keys, never values)."""
    if not needs_credential(spec):
        return None
    name = entry_name(spec)
    entry = load_credentials(path).entry(name, store=spec.name)
    check_fields(spec.type, entry, where=f"the credential [stores.{name}] of store {spec.name!r} in {path}",
                 fix=f"[stores.{name}]")
    return dict(entry)


def check_fields(store_type: str, entry: Mapping[str, str], *, where: str, fix: str = "it") -> None:
    """BadInput (one line naming keys, never values) unless ``entry`` is a valid credential
    of a ``store_type`` store: known keys only, none empty, one complete alternative."""
    if store_type not in ALLOWED:
        raise BadInput(f"{where}: a {store_type} store takes no credential")
    allowed = ALLOWED[store_type]
    for key, value in entry.items():
        if key not in allowed:
            raise BadInput(f"{where} has unknown key {key!r}",
                           hint=f"a {store_type} store's credential takes {', '.join(allowed)}")
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"{where}: {key} is empty")
    choices = REQUIRED[store_type]
    if not any(all(k in entry for k in keys) for keys in choices):
        wanted = " or ".join(" + ".join(keys) for keys in choices)
        raise BadInput(f"{where} lacks {wanted}", hint=f"add {wanted} to {fix}")


def secret_values(credential: Mapping[str, str] | None) -> list[str]:
    """The values of ``credential`` that are secrets (to blank out of any text)."""
    return [v for k, v in (credential or {}).items() if k not in NOT_SECRET]
