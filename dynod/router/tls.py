"""Certificates: the self-signed default for *.<base domain>, per-domain certs, and SNI selection.

The stdlib ssl module does the TLS (it is OpenSSL, and trio.SSLStream drives it); `cryptography` is
here only to make the default certificate and to check a pair before it replaces a working one.
ssl can load a certificate chain only from files, so certificates live under <state-dir>/certs.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import UserError
from ..private_file import write_private
from ..self_signed import self_signed
from .routes import normalize_domain
from .snapshots import DomainCert

DEFAULT_VALIDITY_DAYS = 825
_RENEW_BEFORE = datetime.timedelta(days=30)


def check_cert_pair(domain: str, cert_pem: str, key_pem: str) -> x509.Certificate:
    """Refuse a pair that could not serve ``domain``: unreadable PEM or a key that is not the cert's."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        raise UserError(f"The certificate for {domain} is not a PEM certificate; pass the .crt/.pem file.") \
            from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise UserError(f"The key for {domain} is not an unencrypted PEM private key; "
                        "decrypt it first (openssl pkey -in KEY -out KEY.plain).") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, pub) != key.public_key().public_bytes(enc, pub):
        raise UserError(f"The key for {domain} does not belong to its certificate; pass the matching key.")
    return cert


def _covers(cert: x509.Certificate, names: Iterable[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = set(san.get_values_for_type(x509.DNSName))
    return all(n in have for n in names)


def ensure_default_cert(certs_dir: Path, base_domain: str) -> Path:
    """The self-signed cert+key (one PEM file) for *.<base domain>, made once and reused while valid."""
    base = normalize_domain(base_domain)
    certs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = certs_dir / f"default-{base}.pem"
    names = [f"*.{base}", base]
    now = datetime.datetime.now(datetime.UTC)
    if path.exists():
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            if cert.not_valid_after_utc - now > _RENEW_BEFORE and _covers(cert, names):
                return path
        except ValueError:
            pass  # unreadable: make a new one below
    cert_pem, key_pem = self_signed(f"*.{base}", "dynod router (self-signed)", days=DEFAULT_VALIDITY_DAYS,
                                    dns_names=names)
    pem = cert_pem + key_pem
    write_private(path, pem)
    return path


def store_certs(certs_dir: Path, certs: Iterable[DomainCert]) -> list[tuple[str, Path]]:
    """Check each of dynod's pairs and write each as one private PEM file, named by its domain's hash.

    All are checked before any is written, so a bad entry changes nothing.
    """
    checked: list[tuple[str, bytes]] = []
    for entry in certs:
        domain = normalize_domain(entry.domain)
        check_cert_pair(domain, entry.cert_pem, entry.key_pem)
        pem = entry.cert_pem.rstrip("\n") + "\n" + entry.key_pem.rstrip("\n") + "\n"
        checked.append((domain, pem.encode()))
    certs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stored = []
    for domain, pem in checked:
        # The file name is a hash: a domain is user input and must never become a path.
        path = certs_dir / f"domain-{hashlib.sha256(domain.encode()).hexdigest()[:32]}.pem"
        write_private(path, pem)
        stored.append((domain, path))
    return stored


def _server_context(pem_path: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(pem_path)
    return ctx


class CertStore:
    """The server-side SSLContext: picks a certificate by SNI, falling back to the default one."""

    def __init__(self, default_pem: Path) -> None:
        self.context = _server_context(default_pem)
        self._by_domain: dict[str, ssl.SSLContext] = {}
        self.context.sni_callback = self._select

    def update(self, certs: Iterable[tuple[str, Path]]) -> None:
        """Replace the per-domain certificates (a full set, as dynod sends them)."""
        self._by_domain = {normalize_domain(domain): _server_context(path) for domain, path in certs}

    def context_for(self, server_name: str) -> ssl.SSLContext | None:
        name = normalize_domain(server_name)
        ctx = self._by_domain.get(name)
        if ctx is None and "." in name:
            ctx = self._by_domain.get("*." + name.split(".", 1)[1])
        return ctx

    def _select(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                _ctx: ssl.SSLContext) -> None:
        if server_name:
            ctx = self.context_for(server_name)
            if ctx is not None:
                sslobj.context = ctx
