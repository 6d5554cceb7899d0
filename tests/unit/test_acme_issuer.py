"""The ACME client's failures, each one line: a server that is down, one that answers garbage, bad TLS.
(Issuing, renewing and revoking against a real CA are in tests/integration/test_acme.py.)"""

import http.server
import socket
import ssl
import threading

import pytest

from dynod.acm.issuer import AcmeFailure, AcmeIssuer, new_account_key
from dynod.router.testing import self_signed_pair

KEY = new_account_key()


class Server:
    """A loopback HTTP(S) server answering every request with ``body``."""

    def __init__(self, body: bytes, content_type: str = "text/html", tls: ssl.SSLContext | None = None) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_POST = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _issuer(url: str, **kw) -> AcmeIssuer:
    return AcmeIssuer(directory_url=url, account_key_pem=KEY, request_timeout=5, **kw)


def test_a_server_that_is_down_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    with pytest.raises(AcmeFailure) as failure:
        _issuer(f"http://127.0.0.1:{port}/dir").begin("www.a.test")
    assert str(failure.value) == f"the ACME server at http://127.0.0.1:{port}/dir did not answer (ConnectionError)"
    assert not failure.value.rate_limited


@pytest.mark.parametrize(("body", "content_type"), [
    (b"<html>It works!</html>", "text/html"),
    (b"{not json", "application/json"),
    (b'{"newNonce": 7}', "application/json"),
    (b"[]", "application/json"),
])
def test_a_server_that_answers_garbage_is_one_line(body, content_type):
    server = Server(body, content_type)
    try:
        url = f"http://127.0.0.1:{server.port}/dir"
        with pytest.raises(AcmeFailure) as failure:
            _issuer(url).begin("www.a.test")
        message = str(failure.value)
        assert message.startswith(f"the ACME server at {url} ") and "\n" not in message
        assert "not ACME" in message or "refused" in message
    finally:
        server.close()


def test_a_server_whose_certificate_does_not_verify_names_the_setting(tmp_path):
    cert_pem, key_pem = self_signed_pair("127.0.0.1")
    (tmp_path / "pair.pem").write_text(cert_pem + key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "pair.pem")
    server = Server(b"{}", "application/json", tls=context)
    try:
        with pytest.raises(AcmeFailure) as failure:
            _issuer(f"https://127.0.0.1:{server.port}/dir").begin("www.a.test")
        assert "does not verify" in str(failure.value) and "[acm] ca_file" in str(failure.value)
    finally:
        server.close()


def test_the_account_key_must_be_rsa():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError):
        AcmeIssuer(directory_url="http://127.0.0.1:1/dir", account_key_pem=pem)
