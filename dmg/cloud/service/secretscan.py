"""Refuse anything that looks like a secret in a store definition.

The cloud never holds a data-store secret (DESIGN.md): passwords, keys and tokens
are set from inside the site. A store definition is refused when any key (at any
depth of its options) is named like a secret, or any string value is a connection
string or URL that carries one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from dmg.errors import BadInput

MESSAGE = "secrets are set from inside the site, not in the cloud"
HINT = ("remove {where} from the store definition and set the secret from inside the site with "
        "`dmg credentials set STORE` (sealed where it is typed, synced to every node)")

# Key names, after lower-casing and dropping '-', '_', ' ' and '.'.
_SECRET_KEYS = re.compile(
    r"(password|passwd|passphrase|secret|token|accesskey|accountkey|apikey|privatekey|"
    r"sharedkey|sastoken|sasurl|connectionstring|connstr|^pwd$|^sas$|^sig$)"
)
# Values: "Password=...", "pwd=...", "AccountKey=...", "SharedAccessSignature=...",
# URLs with user:password@, SAS query strings (sig=...).
_SECRET_VALUES = [
    re.compile(r"(?i)(^|[;?&\s])(password|pwd|accountkey|sharedaccesskey|sharedaccesssignature|"
               r"secret|token|sig)\s*="),
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


def looks_like_secret_value(value: str) -> bool:
    return any(pattern.search(value) for pattern in _SECRET_VALUES)


def refuse_secrets(definition: dict[str, Any]) -> None:
    """Raise BadInput naming the first field that looks like a secret; else return."""
    for where, key, value in _walk(definition, ""):
        if key is not None and looks_like_secret_key(key) and value not in (None, ""):
            raise BadInput(MESSAGE, hint=HINT.format(where=f"'{where}'"))
        if isinstance(value, str) and looks_like_secret_value(value):
            raise BadInput(MESSAGE, hint=HINT.format(where=f"the secret in '{where}'"))
