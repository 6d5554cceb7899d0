"""dynod's one maker of self-signed certificates (the router's, the API's, the add-on servers')."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from dynod.self_signed import self_signed


def test_a_certificate_names_what_it_was_asked_for_and_its_key_is_the_one_returned() -> None:
    ip = ipaddress.ip_address("198.18.0.1")
    cert_pem, key_pem = self_signed("heroku-postgresql", "dynod (self-signed)", days=10, dns_names=["a.test"], ips=[ip])
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.subject == cert.issuer  # self-signed
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "heroku-postgresql"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.test"] and san.get_values_for_type(x509.IPAddress) == [ip]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, public) == \
        cert.public_key().public_bytes(serialization.Encoding.DER, public)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc <= now + datetime.timedelta(days=10)
    cert.verify_directly_issued_by(cert)  # signed by its own key


def test_one_without_names_has_no_alternative_names_extension() -> None:
    cert = x509.load_pem_x509_certificate(self_signed("x", "y", days=1)[0])
    assert not [e for e in cert.extensions if isinstance(e.value, x509.SubjectAlternativeName)]
