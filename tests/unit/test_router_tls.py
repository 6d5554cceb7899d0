import ssl

import pytest
from cryptography import x509

from dynod.errors import UserError
from dynod.router.snapshots import DomainCert
from dynod.router.testing import self_signed_pair
from dynod.router.tls import CertStore, check_cert_pair, ensure_default_cert, store_certs

make_pair = self_signed_pair


def test_default_cert_covers_the_base_domain_and_is_reused(tmp_path):
    path = ensure_default_cert(tmp_path, "localhost")
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"*.localhost", "localhost"}
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    assert ensure_default_cert(tmp_path, "localhost").read_bytes() == before


def test_mismatched_or_garbled_pairs_are_refused_and_nothing_is_written(tmp_path):
    cert_a, key_a = make_pair("a.test")
    _, key_b = make_pair("b.test")
    with pytest.raises(UserError, match="does not belong"):
        check_cert_pair("a.test", cert_a, key_b)
    with pytest.raises(UserError, match="not a PEM certificate"):
        check_cert_pair("a.test", "garbage", key_a)
    with pytest.raises(UserError):
        store_certs(tmp_path / "certs", [DomainCert("a.test", cert_a, key_a),
                                         DomainCert("b.test", cert_a, key_b)])
    assert not (tmp_path / "certs").exists()


def test_sni_picks_the_domain_cert_then_wildcards_then_default(tmp_path):
    cert_a, key_a = make_pair("a.test")
    cert_w, key_w = make_pair("*.w.test")
    stored = store_certs(tmp_path / "certs", [DomainCert("A.test", cert_a, key_a),
                                              DomainCert("*.w.test", cert_w, key_w)])
    store = CertStore(ensure_default_cert(tmp_path / "certs", "localhost"))
    store.update(stored)
    assert isinstance(store.context_for("a.test"), ssl.SSLContext)
    assert store.context_for("x.w.test") is not None
    assert store.context_for("other.test") is None
