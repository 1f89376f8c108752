"""Refuse anything that looks like a secret in a store definition.

The cloud never holds a data-store secret (DESIGN.md): passwords, keys and tokens
are set from inside the site (``dmg credentials set STORE``). The schema of each store
type (:mod:`dmg.connectors.options`, ``extra="forbid"``) refuses every field it does not
name; this scan covers what the allowed fields may still carry: a key (at any depth)
named like a secret, or a string value that is a connection string or URL carrying
one — ``Password=``, ``user:pass@``, a SAS ``sig=``, a presigned URL's
``X-Amz-Signature``/``X-Amz-Security-Token``/``X-Amz-Credential`` — also URL-encoded
(``PWD%3D``) or encoded twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

from dmg.errors import BadInput

MESSAGE = "secrets are set from inside the site, not in the cloud"
HINT = ("remove {where} from the store definition and set the secret from inside the site with "
        "`dmg credentials set STORE` (sealed where it is typed, synced to every node)")

# Key names, after lower-casing and dropping '-', '_', ' ' and '.'.
_SECRET_KEYS = re.compile(
    r"(password|passwd|passphrase|secret|token|accesskey|accountkey|apikey|privatekey|"
    r"sharedkey|sastoken|sasurl|connectionstring|connstr|authorization|signature|^pwd$|^sas$|^sig$)"
)
# Values: "Password=...", "pwd=...", "AccountKey=...", "SharedAccessSignature=...",
# URLs with user:password@, SAS query strings (sig=...).
_SECRET_VALUES = [
    re.compile(r"(?i)(^|[;?&\s])(password|pwd|accountkey|sharedaccesskey|sharedaccesssignature|"
               r"secret|token|sig|signature|x-amz-signature|x-amz-security-token|x-amz-credential|"
               r"x-goog-signature|x-goog-credential|awsaccesskeyid)\s*="),
    re.compile(r"(?i)^(bearer|basic)\s+\S"),
    re.compile(r"(?i)^[a-z][a-z0-9+.\-]*://[^/@\s:]*:[^/@\s]+@"),
]


def _normal(key: str) -> str:
    return re.sub(r"[\s_.\-]", "", key.lower())


def _walk(value: Any, where: str) -> Iterator[tuple[str, str | None, Any]]:
    """Yield ``(where, key, value)`` for every key and leaf of a JSON value."""
    if isinstance(value, dict):
        for key, inner in value.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, str(key), inner
            yield from _walk(inner, path)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _walk(inner, f"{where}[{index}]")
    else:
        yield where, None, value


def looks_like_secret_key(key: str) -> bool:
    return bool(_SECRET_KEYS.search(_normal(key)))


def _decodings(value: str) -> Iterator[str]:
    """``value`` and its URL-decodings (twice at most: ``%253D`` is ``%3D`` is ``=``)."""
    yield value
    for _ in range(2):
        decoded = unquote_plus(value)
        if decoded == value:
            return
        yield decoded
        value = decoded


def looks_like_secret_value(value: str) -> bool:
    return any(pattern.search(text) for text in _decodings(value) for pattern in _SECRET_VALUES)


def refuse_secrets(definition: dict[str, Any]) -> None:
    """Raise BadInput naming the first field that looks like a secret; else return."""
    for where, key, value in _walk(definition, ""):
        if key is not None and looks_like_secret_key(key) and value not in (None, ""):
            raise BadInput(MESSAGE, hint=HINT.format(where=f"'{where}'"))
        if isinstance(value, str) and looks_like_secret_value(value):
            raise BadInput(MESSAGE, hint=HINT.format(where=f"the secret in '{where}'"))
