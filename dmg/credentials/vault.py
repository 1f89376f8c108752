"""What one node keeps of the gateway's secrets, encrypted at rest: its :class:`NodeVault`.

Under the node's directory (``<data dir>/nodes/<name>/``), every file mode 0600::

    node.key                  this node's X25519 private key (base64), made at registration
    gateway.json              {"public_key", "sealed"}: the gateway's private key sealed to node.key
    credentials/<entry>.json  {"store", "version", "sealed"}: a credential sealed to node.key

A credential is opened only when a connector is built (:mod:`dmg.credentials.stores`);
nothing here ever writes a plaintext secret. Writes are atomic (staging file + rename).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey

from dmg.credentials import sealing
from dmg.errors import BadInput, PermissionDenied

NODE_KEY = "node.key"
GATEWAY_KEY = "gateway.json"
CREDENTIALS = "credentials"
_ENTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(staging, path)


def credential_payload(store: str, fields: Mapping[str, str], *, version: int = 0) -> bytes:
    """The plaintext that is sealed: the entry name and version travel inside it, so a
    blob moved to another entry's slot is refused when opened."""
    return json.dumps({"store": store, "version": version, "fields": dict(fields)}).encode()


def read_payload(plaintext: bytes, *, store: str, what: str) -> tuple[int, dict[str, str]]:
    """(version, fields) of a :func:`credential_payload`; BadInput when it is not one for ``store``."""
    try:
        body = json.loads(plaintext)
        fields = body["fields"]
        ok = (body.get("store") == store and isinstance(fields, dict)
              and all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()))
    except (ValueError, KeyError, TypeError):
        ok, body, fields = False, {}, {}
    if not ok:
        raise BadInput(f"{what} is not a credential of {store!r}")
    return int(body.get("version") or 0), dict(fields)


class NodeVault:
    """One node's keys and credentials on disk (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key: PrivateKey | None = None

    # -- the node's own key ---------------------------------------------------------------
    def private_key(self, *, create: bool = False) -> PrivateKey | None:
        """This node's private key; made and saved first when ``create`` and none exists."""
        if self._key is not None:
            return self._key
        path = self.directory / NODE_KEY
        try:
            self._key = sealing.private_from_text(path.read_text(), what=str(path))
        except FileNotFoundError:
            if not create:
                return None
            key = sealing.new_private_key()
            write_private(path, sealing.private_text(key).encode())
            self._key = key
        return self._key

    def public_key(self) -> str:
        """This node's public key (base64), making the key pair first if needed."""
        key = self.private_key(create=True)
        assert key is not None
        return sealing.public_text(key)

    def _need_key(self) -> PrivateKey:
        key = self.private_key()
        if key is None:
            raise PermissionDenied(f"this node has no key ({self.directory / NODE_KEY} is missing)",
                                   hint="register the node again, or restore it with `dmg node restore`")
        return key

    # -- the gateway's key ----------------------------------------------------------------
    def gateway_key(self) -> tuple[str, PrivateKey] | None:
        """(public key, private key) of the gateway, if this node was handed it."""
        try:
            body = json.loads((self.directory / GATEWAY_KEY).read_text())
            public, sealed = str(body["public_key"]), str(body["sealed"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        raw = sealing.unseal(sealed, self._need_key(), what="the gateway key")
        key = sealing.private_from_text(raw.decode(), what="the gateway key")
        if sealing.public_text(key) != public:
            raise PermissionDenied("the gateway key kept on this node does not match its public key")
        return public, key

    def gateway_public_key(self) -> str:
        """The gateway public key this node holds the private half of ("" if none), unopened."""
        try:
            return str(json.loads((self.directory / GATEWAY_KEY).read_text())["public_key"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return ""

    def put_gateway_key(self, public: str, sealed: str) -> None:
        """Keep the gateway key ``sealed`` to this node (checked to open and to match ``public``)."""
        raw = sealing.unseal(sealed, self._need_key(), what="the gateway key")
        key = sealing.private_from_text(raw.decode(), what="the gateway key")
        if sealing.public_text(key) != public:
            raise BadInput("the gateway key handed to this node does not match the gateway's public key")
        write_private(self.directory / GATEWAY_KEY,
                      json.dumps({"public_key": public, "sealed": sealed}).encode())

    def keep_gateway_key(self, key: PrivateKey) -> str:
        """Keep a gateway key this node made; returns its public key."""
        public = sealing.public_text(key)
        sealed = sealing.seal(sealing.private_text(key).encode(), sealing.public_text(self._need_key()))
        self.put_gateway_key(public, sealed)
        return public

    # -- credentials ----------------------------------------------------------------------
    def _path(self, store: str) -> Path:
        if not _ENTRY.match(store):
            raise BadInput(f"{store!r} is not a store name")
        return self.directory / CREDENTIALS / f"{store}.json"

    def held(self) -> dict[str, int]:
        """The version of every credential this node holds, by store (entry) name."""
        found: dict[str, int] = {}
        folder = self.directory / CREDENTIALS
        if not folder.is_dir():
            return found
        for path in folder.glob("*.json"):
            try:
                body = json.loads(path.read_text())
                found[str(body["store"])] = int(body["version"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def put_credential(self, store: str, version: int, sealed: str) -> None:
        """Keep version ``version`` of ``store``'s credential, ``sealed`` to this node; it is
        opened once first, so a blob that is not this node's, or not that store's, is refused."""
        plaintext = sealing.unseal(sealed, self._need_key(), what=f"the credential of {store!r}")
        inner, _fields = read_payload(plaintext, store=store, what=f"the blob handed over for {store!r}")
        if inner != version:
            raise BadInput(f"the blob handed over for {store!r} holds v{inner}, not v{version}")
        write_private(self._path(store), json.dumps(
            {"store": store, "version": version, "sealed": sealed}).encode())

    def remove_credential(self, store: str) -> None:
        self._path(store).unlink(missing_ok=True)

    def sealed_credential(self, store: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = json.loads(self._path(store).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            raise BadInput(f"{self._path(store)} is damaged", hint="run `dmg credentials sync`") from None
        return body

    def credential(self, store: str) -> dict[str, str] | None:
        """The fields of ``store``'s credential (opened now), or None when this node holds none."""
        body = self.sealed_credential(store)
        if body is None:
            return None
        plaintext = sealing.unseal(str(body.get("sealed", "")), self._need_key(),
                                   what=f"the credential of {store!r}")
        return read_payload(plaintext, store=store, what=str(self._path(store)))[1]

    # -- all of it --------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """Every file of the vault (for a backup)."""
        paths = [self.directory / NODE_KEY, self.directory / GATEWAY_KEY]
        folder = self.directory / CREDENTIALS
        if folder.is_dir():
            paths += sorted(folder.glob("*.json"))
        return [p for p in paths if p.is_file()]

    def forget(self) -> None:
        """Remove the node's key, the gateway key and every credential."""
        for name in (NODE_KEY, GATEWAY_KEY):
            (self.directory / name).unlink(missing_ok=True)
        shutil.rmtree(self.directory / CREDENTIALS, ignore_errors=True)
        self._key = None
