"""Secret fields as a user types them: a JSON object, or ``key=value`` lines.

Read from stdin (or a hidden prompt) by ``dmg credentials set``, never from argv.
Errors are one line that names keys and line numbers, never a value.
"""

from __future__ import annotations

import json

from dmg.errors import BadInput

#: Larger input is refused (a credential is a few short strings).
MAX_INPUT = 64 * 1024


def parse_fields(text: str) -> dict[str, str]:
    """The fields in ``text``: a JSON object of strings, else ``key=value`` lines (blank
    lines and ``#`` comments skipped; spaces around the key and the ``=`` trimmed, the
    value kept as typed apart from its line end). BadInput for anything else."""
    if len(text) > MAX_INPUT:
        raise BadInput(f"the credential is over {MAX_INPUT // 1024} KiB", hint="give only the secret fields")
    stripped = text.strip()
    if not stripped:
        raise BadInput("no credential fields were given",
                       hint='give a JSON object ({"password": "..."}) or key=value lines on stdin')
    if stripped.startswith(("{", "[")):
        return _json_fields(stripped)
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"line {number} of the credential is not key=value",
                           hint='write one key=value per line, or a JSON object')
        if key in fields:
            raise BadInput(f"the credential gives {key!r} twice (line {number})")
        fields[key] = value.strip()
    return fields


def _json_fields(text: str) -> dict[str, str]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"the credential is not valid JSON (line {exc.lineno}, column {exc.colno})",
                       hint='give a JSON object of strings, or key=value lines') from None
    if not isinstance(body, dict):
        raise BadInput("the credential must be a JSON object of strings")
    for key, value in body.items():
        if not isinstance(value, str):
            raise BadInput(f"the credential's {key!r} must be a string", hint="quote the value")
    return dict(body)
