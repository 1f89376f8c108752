"""Public-key sealing and password-based encryption, all from PyNaCl (libsodium).

- :func:`new_private_key`: an X25519 key pair (``nacl.public.PrivateKey``).
- :func:`seal` / :func:`unseal`: libsodium sealed boxes (``crypto_box_seal``: an
  ephemeral X25519 key + XSalsa20-Poly1305), so anyone holding a public key can seal,
  and only the private key's holder can open. Blobs travel as base64 text.
- :func:`lock_with_password` / :func:`unlock_with_password`: argon2id (libsodium's
  ``crypto_pwhash``, moderate limits) derives a key from the password, and a
  ``SecretBox`` (XSalsa20-Poly1305, an AEAD) encrypts; the salt and limits travel in
  the header. Used by ``dmg node backup``.

Nothing here is home-made: each function is one libsodium construction. Errors are
:mod:`dmg.errors` with one line that never quotes a key or a plaintext.
"""

from __future__ import annotations

import base64
import binascii
import json

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils
from nacl.public import PrivateKey, PublicKey, SealedBox

from dmg.errors import BadInput, PermissionDenied

#: The header of a password-locked file (a JSON line, then the ciphertext in base64).
LOCKED_FORMAT = "dmg-locked-v1"


def new_private_key() -> PrivateKey:
    return PrivateKey.generate()


def public_text(key: PrivateKey | PublicKey) -> str:
    """A public key as base64 text (what the cloud stores)."""
    public = key.public_key if isinstance(key, PrivateKey) else key
    return base64.b64encode(bytes(public)).decode()


def private_text(key: PrivateKey) -> str:
    return base64.b64encode(bytes(key)).decode()


def private_from_text(text: str, *, what: str) -> PrivateKey:
    try:
        return PrivateKey(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError, TypeError, nacl.exceptions.CryptoError):
        raise BadInput(f"{what} is not a private key") from None


def public_from_text(text: str, *, what: str) -> PublicKey:
    try:
        return PublicKey(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError, TypeError, nacl.exceptions.CryptoError):
        raise BadInput(f"{what} is not a public key") from None


def seal(plaintext: bytes, public_key: str | PublicKey) -> str:
    """``plaintext`` sealed to ``public_key`` (base64 text, or a key), as base64 text."""
    key = (public_from_text(public_key, what="the key to seal to") if isinstance(public_key, str)
           else public_key)
    return base64.b64encode(SealedBox(key).encrypt(plaintext)).decode()


def unseal(blob: str, private_key: PrivateKey, *, what: str) -> bytes:
    """Open a :func:`seal`-ed blob; PermissionDenied (naming ``what``) when this key cannot."""
    try:
        raw = base64.b64decode(blob, validate=True)
        return SealedBox(private_key).decrypt(raw)
    except (binascii.Error, ValueError, TypeError, nacl.exceptions.CryptoError):
        raise PermissionDenied(f"{what} cannot be opened with this node's key",
                               hint="it was sealed to another key; run `dmg credentials sync`") from None


def lock_with_password(plaintext: bytes, password: str) -> bytes:
    """``plaintext`` encrypted under ``password`` (argon2id + SecretBox), as a text file body."""
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    ops, mem = nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE
    key = nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, password.encode(), salt,
                                   opslimit=ops, memlimit=mem)
    header = {"format": LOCKED_FORMAT, "kdf": "argon2id", "salt": base64.b64encode(salt).decode(),
              "opslimit": ops, "memlimit": mem}
    body = base64.b64encode(nacl.secret.SecretBox(key).encrypt(plaintext)).decode()
    return (json.dumps(header) + "\n" + body + "\n").encode()


def unlock_with_password(data: bytes, password: str, *, what: str) -> bytes:
    """Open a :func:`lock_with_password` body; BadInput for a damaged file or a wrong password."""
    try:
        head, body = data.decode().split("\n", 1)
        header = json.loads(head)
        if header.get("format") != LOCKED_FORMAT or header.get("kdf") != "argon2id":
            raise ValueError
        salt = base64.b64decode(header["salt"], validate=True)
        key = nacl.pwhash.argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, password.encode(), salt,
                                       opslimit=int(header["opslimit"]), memlimit=int(header["memlimit"]))
        ciphertext = base64.b64decode(body.strip(), validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error,
            nacl.exceptions.CryptoError):
        raise BadInput(f"{what} is not a dmg backup file (or it is damaged)") from None
    try:
        return nacl.secret.SecretBox(key).decrypt(ciphertext)
    except nacl.exceptions.CryptoError:
        raise BadInput(f"wrong password for {what} (or the file is damaged)") from None
