"""The TCP listener's address and its TLS certificate (``[api] listen``, ``[api] cert``).

Without a configured certificate dynod makes one self-signed certificate (ECDSA P-256, with the
``cryptography`` package it already uses for the router's default certificate) naming the host's
name, ``localhost`` and the listen address, so a client can pin it (``dynoctl login`` does) and
check the name; it is kept (0600) in state_dir/api/ and remade when it nears its end or no
longer names the host.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509

from ..errors import UserError
from ..private_file import write_private
from ..self_signed import self_signed

VALIDITY_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


def parse_api_listen(text: str) -> tuple[str, int]:
    """'0.0.0.0:5443', '127.0.0.1:5443' or '[::]:5443' -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise UserError(f"[api] listen {text!r} is not HOST:PORT with an IP address: use e.g. 0.0.0.0:5443.") from None
    if not sep or not 0 <= port <= 65535:
        raise UserError(f"[api] listen {text!r} needs a port from 1 to 65535: use e.g. 0.0.0.0:5443.")
    return str(address), port


def ensure_api_cert(directory: Path, hostname: str, address: str) -> Path:
    """The self-signed cert+key (one PEM file) for this host's API, made once and reused while valid."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / "api-self-signed.pem"
    names = sorted({hostname, "localhost"})
    ips = {ipaddress.ip_address("127.0.0.1")}
    if not ipaddress.ip_address(address).is_unspecified:
        ips.add(ipaddress.ip_address(address))
    now = datetime.datetime.now(datetime.UTC)
    if path.exists():
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if cert.not_valid_after_utc - now > RENEW_BEFORE and set(names) <= set(san.get_values_for_type(
                    x509.DNSName)) and ips <= set(san.get_values_for_type(x509.IPAddress)):
                return path
        except (ValueError, x509.ExtensionNotFound):
            pass  # unreadable or not ours: make a new one below
    cert_pem, key_pem = self_signed(hostname, "dynod API (self-signed)", days=VALIDITY_DAYS, dns_names=names,
                                    ips=sorted(ips, key=str))
    write_private(path, cert_pem + key_pem)
    return path


def server_context(pem_path: Path) -> ssl.SSLContext:
    """A server context from one PEM file holding the certificate (chain) and its private key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(pem_path))
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"[api] cert {pem_path}: cannot load a certificate and key from it ({exc}).") from None
    return context


def certificate_pem(pem_path: Path) -> str:
    """Only the certificates of a cert+key PEM file (what a client pins), never the key."""
    text = Path(pem_path).read_text()
    blocks = text.split("-----END CERTIFICATE-----")
    return "".join(b[b.index("-----BEGIN CERTIFICATE-----"):] + "-----END CERTIFICATE-----\n"
                   for b in blocks if "-----BEGIN CERTIFICATE-----" in b)


def certificate_fingerprint(pem_path: Path) -> str:
    """SHA-256 of the first certificate's DER: what ``dynoctl login`` shows when it pins one."""
    import hashlib

    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(certificate_pem(pem_path).split("-----END CERTIFICATE-----")[0]
                                                   + "-----END CERTIFICATE-----\n")).hexdigest()
