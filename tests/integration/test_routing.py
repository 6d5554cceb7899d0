"""The router fed by a real dynod: no request lost to scaling, restarts, or dynod itself restarting."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import Dynod, write_app

pytestmark = pytest.mark.integration


class Load:
    """Keep-alive GETs through the router from one thread until stopped; every outcome counted."""

    def __init__(self, dynod: Dynod, app: str) -> None:
        self.port = dynod.http_port
        self.host = f"{app}.localhost"
        self.results: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/", headers={"Host": self.host})
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    self.results[body.split()[0].decode()] += 1
                else:
                    self.failures.append(f"{response.status} {body[:80]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def total(self) -> int:
        return sum(self.results.values())


def _router_errors(dynod: Dynod, app: str) -> str:
    return "\n".join(x for x in dynod.logs(app).splitlines() if "at=error" in x or "State changed" in x
                     or "SIGTERM" in x)


@pytest.fixture
def graceful_app(dynod: Dynod, app: str, tmp_path: Path) -> str:
    dynod.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", app)
    dynod.ctl("ps:scale", "web=2", "-a", app)
    dynod.up(app, 2)
    return app


def test_scaling_under_load_fails_no_request(dynod: Dynod, graceful_app: str) -> None:
    with Load(dynod, graceful_app) as load:
        time.sleep(0.5)
        dynod.ctl("ps:scale", "web=3", "-a", graceful_app)
        dynod.up(graceful_app, 3)
        time.sleep(0.5)
        dynod.ctl("ps:scale", "web=1", "-a", graceful_app)
        dynod.wait_for(lambda: len(dynod.dynos(graceful_app)) == 1, what="scale down to 1")
        time.sleep(0.5)
    assert load.failures == [], _router_errors(dynod, graceful_app)
    assert load.total > 50 and len(load.results) >= 2


def test_dynod_restart_under_load_fails_no_request(dynod: Dynod, graceful_app: str) -> None:
    with Load(dynod, graceful_app) as load:
        time.sleep(0.5)
        before = load.total
        dynod.kill9()
        time.sleep(0.5)
        during = load.total
        dynod.start()
        time.sleep(0.5)
    assert load.failures == [], _router_errors(dynod, graceful_app)
    assert during > before  # the router kept serving while dynod was gone
    assert set(load.results) == {"web.1", "web.2"}


def test_router_request_lines_reach_the_app_log(dynod: Dynod, graceful_app: str) -> None:
    with Load(dynod, graceful_app):
        time.sleep(0.3)
    logs = dynod.wait_for(lambda: (text := dynod.logs(graceful_app)) and "dynod[router]: at=info" in text and text,
                          what="a router line")
    line = next(x for x in logs.splitlines() if "dynod[router]: at=info" in x)
    for field in ("method=GET", 'path="/"', f"host={graceful_app}.localhost", "request_id=", "fwd=",
                  "dyno=web.", "connect=", "service=", "status=200", "bytes=", "protocol=http"):
        assert field in line, line


def _self_signed(hostname: str, directory: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_custom_domain_with_its_certificate_over_https(dynod: Dynod, graceful_app: str, tmp_path: Path) -> None:
    import ssl

    domain = f"{graceful_app}.example.test"
    dynod.ctl("domains:add", domain, "-a", graceful_app)
    assert domain in dynod.ctl("domains", "-a", graceful_app).stdout
    cert, key = _self_signed(domain, tmp_path)
    dynod.ctl("certs:add", str(cert), str(key), "--domain", domain, "-a", graceful_app)
    assert domain in dynod.ctl("certs", "-a", graceful_app).stdout
    context = ssl.create_default_context(cafile=str(cert))

    def fetch_https() -> str | None:
        try:
            raw = socket.create_connection(("127.0.0.1", dynod.https_port), timeout=10)
            tls = context.wrap_socket(raw, server_hostname=domain)  # SNI picks the app's certificate
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            tls.close()
            return data.decode()
        except (OSError, ssl.SSLError):
            return None

    answer = dynod.wait_for(fetch_https, what="an HTTPS answer with the app's certificate")
    assert answer.startswith("HTTP/1.1 200") and "web." in answer
    logs = dynod.wait_for(lambda: "protocol=https" in dynod.logs(graceful_app) and dynod.logs(graceful_app),
                          what="an https router line")
    assert f"host={domain}" in logs
    bad = dynod.ctl("certs:add", str(cert), str(key), "--domain", "other.example.test", "-a", graceful_app,
                    check=False)
    assert bad.returncode != 0 and "not a domain of" in bad.stderr


def test_maintenance_mode_answers_h80(dynod: Dynod, graceful_app: str) -> None:
    dynod.ctl("maintenance:on", "-a", graceful_app)

    def status() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", dynod.http_port, timeout=10)
        conn.request("GET", "/", headers={"Host": f"{graceful_app}.localhost"})
        code = conn.getresponse().status
        conn.close()
        return code

    dynod.wait_for(lambda: status() == 503, what="the maintenance page")
    dynod.wait_for(lambda: "code=H80" in dynod.logs(graceful_app), what="an H80 line")
    dynod.ctl("maintenance:off", "-a", graceful_app)
    dynod.wait_for(lambda: status() == 200, what="the app again")


def test_power_of_two_choices_per_app(dynod: Dynod, graceful_app: str) -> None:
    assert "random" in dynod.ctl("routing:policy", "-a", graceful_app).stdout
    assert "p2c" in dynod.ctl("routing:policy", "p2c", "-a", graceful_app).stdout
    with Load(dynod, graceful_app) as load:
        time.sleep(1)
    assert load.failures == [] and set(load.results) == {"web.1", "web.2"}
    bad = dynod.ctl("routing:policy", "round-robin", "-a", graceful_app, check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_a_new_app_without_web_dynos_answers_h14_not_the_unknown_hosts_404(dynod: Dynod, app: str) -> None:
    # The router used to hear of an app only when a web dyno of it was up.
    def get() -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", dynod.http_port, timeout=30)
        try:
            conn.request("GET", "/", headers={"Host": f"{app}.localhost"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    status, body = dynod.wait_for(lambda: (r := get())[0] != 404 and r, timeout=10,
                                  what=f"the router knowing {app}")
    assert status == 503, body
    dynod.wait_for(lambda: "code=H14" in dynod.logs(app), what="the H14 line in the app's log")
