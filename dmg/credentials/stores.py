"""Open a store with this site's credential: what workers and the dispatcher call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dmg.connectors import Connector, StoreSpec, connector_for
from dmg.credentials.rules import credential_for, secret_values
from dmg.errors import DmgError
from settings import Settings

#: Shorter values are not blanked out (they would mangle ordinary words).
_MIN_SECRET = 4


def open_store(spec: StoreSpec, *, settings: Settings) -> Connector:
    """The connector of ``spec``, given its credential from ``settings.credentials_path``.

    Raises what :func:`dmg.credentials.credential_for` and
    :func:`dmg.connectors.connector_for` raise; an error raised while building the
    connector never carries the secret (it is blanked out if a library echoed it).
    """
    credential = credential_for(spec, path=settings.credentials_path)
    try:
        return connector_for(spec, credential=credential)
    except DmgError as exc:
        if credential is None:
            raise
        secrets = secret_values(credential)
        raise type(exc)(redact(exc.message, secrets), hint=redact(exc.hint, secrets)) from None


def redact(text: str, secrets: Iterable[str] | Mapping[str, str]) -> str:
    """``text`` with every secret (the secret values of a credential mapping, or the
    strings given) replaced by ``***``."""
    values = secret_values(secrets) if isinstance(secrets, Mapping) else list(secrets)
    for value in sorted((v for v in values if len(v) >= _MIN_SECRET), key=len, reverse=True):
        text = text.replace(value, "***")
    return text
