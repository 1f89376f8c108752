"""A throw-away certificate authority for a one-machine site (``dmg up --tls``).

:func:`site_tls` creates, once per data dir, under ``<data dir>/tls/``:

- ``ca.pem`` (public) and ``ca-key.pem`` (mode 0600): a CA that lives only here;
- ``server.pem`` and ``server-key.pem`` (0600): a certificate signed by that CA for
  ``localhost`` and ``127.0.0.1``, used by the embedded Redis (TLS only) and the cloud
  (HTTPS).

Every client of the site is given ``ca.pem`` (``DMG_REDIS_TLS_CA``, ``DMG_CLOUD_CA``) and
checks the server's certificate and host name against it. Nothing here is meant for a
site that spans machines: there, certificates come from the operator's own CA.
:func:`make_ca` and :func:`issue` are public for tests (a wrong CA, a wildcard name).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["KeyPair", "SiteTLS", "issue", "make_ca", "site_tls"]

#: Names the site's server certificate is valid for.
SITE_HOSTS = ("localhost", "127.0.0.1")
#: A throw-away site's certificates live this long.
VALIDITY = datetime.timedelta(days=825)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class SiteTLS:
    """Where a site's TLS files are."""

    ca: Path
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str = "throw-away CA of a dmg site") -> KeyPair:
    """A self-signed CA certificate and its key."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue(ca: KeyPair, hosts: tuple[str, ...] | list[str]) -> KeyPair:
    """A server (and client) certificate signed by ``ca`` for ``hosts``: DNS names (a
    wildcard such as ``*.example.test`` too) and IP addresses."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _key()
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600, also when it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def write_pair(pair: KeyPair, cert: Path, key: Path) -> None:
    """Save ``pair``: the certificate 0644, the key 0600."""
    write_private(key, pair.key_pem)
    cert.write_bytes(pair.cert_pem)


def site_tls(data_dir: Path) -> SiteTLS:
    """The site's CA and server certificate under ``<data dir>/tls/``, created on first
    use and kept for every later start (idempotent)."""
    folder = data_dir / "tls"
    files = SiteTLS(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server-key.pem")
    if files.ca.is_file() and files.cert.is_file() and files.key.is_file():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    write_pair(ca, files.ca, folder / "ca-key.pem")
    write_pair(issue(ca, SITE_HOSTS), files.cert, files.key)
    return files
