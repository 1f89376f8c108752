"""Secrets the cloud owns: the API token, the Fernet key, gateway keys, node tokens.

- The API token (users' ``Authorization: Bearer``) is ``settings.api_token``, else
  generated once into ``<data_dir>/cloud/api-token`` (mode 0600).
- Gateway keys are stored Fernet-encrypted with the key in
  ``<data_dir>/cloud/secret.key`` (generated once, mode 0600), next to a sha256
  lookup hash. Node tokens are stored as their sha256 only.

Files are created atomically (write a private staging file, then hard-link it to
the final name), so two processes starting at once agree on one value.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from dmg.errors import Fatal
from settings import Settings

GATEWAY_KEY_PREFIX = "dmgk_"
NODE_TOKEN_PREFIX = "dmgn_"


def cloud_dir(settings: Settings) -> Path:
    return settings.data_dir / "cloud"


def _read_or_create(path: Path, make: bytes) -> bytes:
    """The content of ``path``; creates it with ``make`` (mode 0600) if it is absent."""
    with contextlib.suppress(FileNotFoundError):
        content = path.read_bytes().strip()
        if content:
            return content
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the cloud's secrets: owner only
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(make + b"\n")
        with contextlib.suppress(FileExistsError):
            os.link(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    content = path.read_bytes().strip()
    if not content:
        raise Fatal(f"{path} is empty", hint="delete it and start the cloud again")
    return content


def api_token(settings: Settings) -> str:
    """The users' API token: ``settings.api_token`` or the one generated in the data dir."""
    if settings.api_token:
        return settings.api_token
    path = cloud_dir(settings) / "api-token"
    return _read_or_create(path, secrets.token_urlsafe(32).encode()).decode()


def token_matches(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_gateway_key() -> str:
    return GATEWAY_KEY_PREFIX + secrets.token_urlsafe(32)


def new_node_token() -> str:
    return NODE_TOKEN_PREFIX + secrets.token_urlsafe(32)


class KeyBox:
    """Encrypts and decrypts gateway keys with the cloud's Fernet key."""

    def __init__(self, settings: Settings) -> None:
        key = _read_or_create(cloud_dir(settings) / "secret.key", Fernet.generate_key())
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise Fatal(f"{cloud_dir(settings) / 'secret.key'} is not a valid key",
                        hint="restore it from a backup; without it gateway keys cannot be read") from exc

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise Fatal("a gateway key cannot be decrypted with this cloud's secret.key",
                        hint="the data dir's cloud/secret.key changed; restore it or regenerate the keys"
                        ) from exc
