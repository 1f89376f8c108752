"""The site's credentials file: read it, refuse it when others can read it.

The file is read again on every call (it is small), so a changed secret is used
by the next shard without restarting the node.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dmg.errors import BadInput, NotFound, PermissionDenied

#: A table named like a store (the cloud's store name rule).
_STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WHERE = re.compile(r"\(at line \d+, column \d+\)")


@dataclass(frozen=True)
class CredentialFile:
    """The credentials of one site, by store name. ``exists`` is False for no file."""

    path: Path
    stores: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    exists: bool = True

    def entry(self, name: str, *, store: str = "") -> Mapping[str, str]:
        """The ``[stores.<name>]`` table (for store ``store``, by default ``name``);
        NotFound naming the file and the store if absent."""
        store = store or name
        if not self.exists:
            raise NotFound(f"store {store!r} needs a credential, but {self.path} does not exist",
                           hint=f"set it with `dmg credentials set {store}` (synced to every node), "
                                f"or create the file (chmod 600) with a [stores.{name}] table")
        found = self.stores.get(name)
        if found is None:
            raise NotFound(f"store {store!r} has no credential [stores.{name}] in {self.path}",
                           hint=f"set it with `dmg credentials set {store}` (synced to every node), "
                                f"or add a [stores.{name}] table to the file")
        return found

    def __repr__(self) -> str:  # never the secrets
        return f"CredentialFile(path={str(self.path)!r}, stores={sorted(self.stores)!r})"


def load_credentials(path: Path) -> CredentialFile:
    """Read ``path``; a missing file is an empty :class:`CredentialFile` (``exists=False``).

    Raises PermissionDenied when group or others may read or write it (or it is not
    a regular file) and BadInput when it is not valid TOML or not made of
    ``[stores.<name>]`` tables of strings. Messages never quote a value.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return CredentialFile(path, {}, exists=False)
    except OSError as exc:
        raise PermissionDenied(f"cannot read credentials file {path} ({exc.strerror})",
                               hint="the node's user must own it; chmod 600") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PermissionDenied(f"credentials file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise PermissionDenied(f"credentials file {path} is open to other users (mode {mode:04o})",
                                   hint=f"chmod 600 {path}")
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read()
    finally:
        os.close(fd)
    try:
        body = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"credentials file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        where = _WHERE.search(str(exc))  # the position only: the message could quote a value
        position = f" {where.group(0)}" if where else ""
        raise BadInput(f"credentials file {path} is not valid TOML{position}",
                       hint='write one [stores.NAME] table per store, with key = "value" lines') from None
    return CredentialFile(path, _stores(body, path))


def _stores(body: dict[str, object], path: Path) -> dict[str, dict[str, str]]:
    unknown = sorted(set(body) - {"stores"})
    if unknown:
        raise BadInput(f"credentials file {path}: unknown top-level key {unknown[0]!r}",
                       hint="put each store's secrets in a [stores.NAME] table")
    tables = body.get("stores", {})
    if not isinstance(tables, dict):
        raise BadInput(f"credentials file {path}: 'stores' must be a table of [stores.NAME] tables")
    stores: dict[str, dict[str, str]] = {}
    for name, table in tables.items():
        if not _STORE_NAME.match(name):
            raise BadInput(f"credentials file {path}: {name!r} is not a store name")
        if not isinstance(table, dict):
            raise BadInput(f"credentials file {path}: stores.{name} must be a table",
                           hint=f'write [stores.{name}] and then key = "value" lines')
        entry: dict[str, str] = {}
        for key, value in table.items():
            if not isinstance(value, str):
                raise BadInput(f"credentials file {path}: stores.{name}.{key} must be a string",
                               hint="quote the value")
            entry[key] = value
        stores[name] = entry
    return stores
