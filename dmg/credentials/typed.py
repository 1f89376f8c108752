"""Where a typed secret comes from: stdin (JSON or ``key=value`` lines) when it is piped,
else a hidden prompt per field. Never argv."""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from dmg.credentials.entry import MAX_INPUT, parse_fields
from dmg.credentials.rules import NOT_SECRET, REQUIRED
from dmg.errors import BadInput


def read_fields(store_type: str, *, stdin: TextIO | None = None) -> dict[str, str]:
    """The secret fields of a ``store_type`` credential: parsed from ``stdin`` when it is not
    a terminal, else asked for one by one (hidden, with getpass) for the first complete
    set of fields the type takes (``REQUIRED``)."""
    stream = stdin or sys.stdin
    if not stream.isatty():
        return parse_fields(stream.read(MAX_INPUT + 1))
    fields: dict[str, str] = {}
    for key in REQUIRED.get(store_type, ((),))[0]:
        value = input(f"{key}: ") if key in NOT_SECRET else getpass.getpass(f"{key} (hidden): ")
        if not value:
            raise BadInput(f"no {key} was typed")
        fields[key] = value
    return fields


def read_password(*, confirm: bool, stdin: TextIO | None = None) -> str:
    """A backup password: the first line of ``stdin`` when it is piped, else typed twice at a
    hidden prompt (once to open). BadInput when empty or when the two differ."""
    stream = stdin or sys.stdin
    if not stream.isatty():
        password = stream.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("backup password (hidden): ")
        if confirm and getpass.getpass("again: ") != password:
            raise BadInput("the two passwords differ")
    if not password:
        raise BadInput("the backup password is empty", hint="give it on stdin or at the prompt")
    return password
