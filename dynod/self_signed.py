"""Self-signed certificates: how dynod makes every certificate of its own.

The router's default certificate for *.<base domain>, the API's for its TCP listener and each
PostgreSQL add-on server's are all one ECDSA P-256 key and a certificate that it signs itself,
valid from a few minutes ago (clocks drift) for a given number of days, naming its DNS names and
IP addresses. ``cryptography`` makes them: the well-kept X.509 library of the field, which dynod
already uses for ACME and to check the certificates users upload.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(common_name: str, organization: str, *, days: int, dns_names: Sequence[str] = (),
                ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = ()) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM: PKCS#8, unencrypted) for the names and addresses given."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt += [x509.IPAddress(ip) for ip in ips]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
