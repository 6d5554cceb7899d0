"""ACM through a real dynod against a real ACME server: Debian's pebble, private to this module.

Pebble listens on loopback only, with a CA made here for its HTTPS; its validation authority resolves
the test domains through a DNS stub this module runs on a loopback UDP port (``-dnsserver``), and
connects to them on the test router's HTTP port (``httpPort``): every challenge is really fetched
from dynod's router (PEBBLE_VA_ALWAYS_VALID is not set). Domains carry a random token, so two runs
at once never share a name; a domain "pointing elsewhere" resolves to 127.0.0.2, where nothing listens.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import STACKS, Dynod, _force_cleanup, _host_leftovers, free_port, free_third_octet, write_app

pytestmark = pytest.mark.integration

PEBBLE = shutil.which("pebble")
LIFETIME = 40  # seconds: pebble's certificateValidityPeriod, so a renewal comes due within the test


class DnsStub:
    """A tiny authoritative DNS server on loopback: A records from ``table``, NXDOMAIN for other names."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(2048)
            except OSError:
                return  # closed
            with contextlib.suppress(Exception):
                self.sock.sendto(self.answer(query), peer)

    def answer(self, query: bytes) -> bytes:
        ident, flags = struct.unpack("!HH", query[:4])
        pos, labels = 12, []
        while query[pos]:
            size = query[pos]
            labels.append(query[pos + 1:pos + 1 + size].decode().lower())
            pos += 1 + size
        qtype = struct.unpack("!H", query[pos + 1:pos + 3])[0]
        question = query[12:pos + 5]
        address = self.table.get(".".join(labels))
        rflags = 0x8400 | (flags & 0x0100)  # a response, authoritative, recursion-desired copied
        if address is None:
            return struct.pack("!HHHHHH", ident, rflags | 3, 1, 0, 0, 0) + question  # NXDOMAIN
        if qtype != 1:  # AAAA, CAA, ...: the name exists, without such records
            return struct.pack("!HHHHHH", ident, rflags, 1, 0, 0, 0) + question
        record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
        return struct.pack("!HHHHHH", ident, rflags, 1, 1, 0, 0) + question + record

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


def _tls_for_loopback(directory: Path) -> Path:
    """A CA and a 127.0.0.1 certificate for pebble's own HTTPS; returns the CA file dynod trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dynod test ACME server CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory / "ca.pem"


class Pebble:
    """Let's Encrypt's test CA on loopback ports of its own; stop() and start() keep the ports."""

    def __init__(self, directory: Path, *, http_port: int, dns_port: int) -> None:
        self.dir = directory
        self.ca_file = _tls_for_loopback(directory)
        self.port, self.mgmt_port = free_port(), free_port()
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(directory / "cert.pem"), "privateKey": str(directory / "key.pem"),
            "httpPort": http_port, "tlsPort": free_port(), "ocspResponderURL": "",
            "externalAccountBindingRequired": False, "certificateValidityPeriod": LIFETIME}}
        (directory / "pebble.json").write_text(json.dumps(config))
        self.dns_port = dns_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> None:
        # NOSLEEP: no random 0-15 s wait before each validation; NONCEREJECT=0: no deliberately bad
        # nonces (the library retries one, a second in a row would only make the test flaky).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_NOSLEEP": "1",
               "PEBBLE_WFE_NONCEREJECT": "0"}
        log = open(self.dir / "pebble.log", "ab")  # noqa: SIM115 - pebble's, closed when it exits
        self.proc = subprocess.Popen([PEBBLE or "pebble", "-config", str(self.dir / "pebble.json"),
                                      "-dnsserver", f"127.0.0.1:{self.dns_port}", "-strict"],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"pebble did not start:\n{(self.dir / 'pebble.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def management(self, path: str) -> str:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = http.client.HTTPSConnection("127.0.0.1", self.mgmt_port, context=context, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.read().decode()
        finally:
            conn.close()

    def root_ca(self) -> str:
        return self.management("/roots/0")

    def cert_status(self, serial: int) -> str:
        return json.loads(self.management(f"/cert-status-by-serial/{serial:x}"))["Status"]


@pytest.fixture(scope="module")
def acme_env() -> Iterator[tuple[Dynod, Pebble, DnsStub, str]]:
    """(dynod, pebble, dns, token): a dynod of its own whose [acm] points at a private pebble."""
    if os.geteuid() != 0:
        pytest.skip("integration tests need root")
    if PEBBLE is None:
        pytest.skip("pebble is not installed: ./install.sh --deps-only (or apt-get install pebble)")
    root = Path(tempfile.mkdtemp(prefix="dynod-it-acme-"))
    token = secrets.token_hex(2)
    third = free_third_octet()
    d = Dynod(root=root, config=root / "dynod.toml", socket=root / "run" / "api.sock",
              cgroup_name=f"dynod-test-{token}", bridge=f"dyt{token}", subnet=f"198.19.{third}.0/24",
              http_port=free_port(), https_port=free_port())
    dns = DnsStub({})
    (root / "pebble").mkdir()
    pebble = Pebble(root / "pebble", http_port=d.http_port, dns_port=dns.port)
    d.config.write_text(f"""
state_dir = "{root / 'state'}"
run_dir = "{root / 'run'}"
stacks_path = "{STACKS}"

[dynos]
stop_timeout = 3.0
boot_timeout = 15.0
tmpfs_size_mb = 64

[network]
subnet = "{d.subnet}"
bridge = "{d.bridge}"

[cgroups]
name = "{d.cgroup_name}"

[router]
http = ["127.0.0.1:{d.http_port}"]
https = ["127.0.0.1:{d.https_port}"]
workers = 1

[logs]
metrics_interval = 0

[acm]
directory_url = "{pebble.directory_url}"
ca_file = "{pebble.ca_file}"
email = "ops@example.test"
renew_before_days = 1.0
retry_base = 1.0
retry_max = 4.0
rate_limit_pause = 2.0
request_timeout = 5.0
order_timeout = 20.0
""")
    try:
        pebble.start()
        d.start()
        yield d, pebble, dns, token
    finally:
        try:
            with d.client() as client:
                client.request("POST", "/shutdown", {"stop_dynos": True})
            if d.proc is not None:
                d.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - the leak check below says what is left
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        pebble.stop()
        dns.close()
        leftovers = _host_leftovers(d)
        if leftovers:
            _force_cleanup(d)
        for name, keep in (("dynod.log", "dynod-it-acme-last.log"), ("pebble/pebble.log", "pebble-it-last.log")):
            if (root / name).exists():
                shutil.copy(root / name, Path(tempfile.gettempdir()) / keep)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"the suite left these on the host: {leftovers}"


def _status(d: Dynod, app: str) -> dict:
    with d.client() as client:
        return client.acm_status(app)


def _domain(d: Dynod, app: str, hostname: str) -> dict | None:
    return next((x for x in _status(d, app)["domains"] if x["hostname"] == hostname), None)


def _https_get(d: Dynod, hostname: str, cafile: Path) -> tuple[str, int]:
    """GET / over HTTPS with SNI, verifying the chain against pebble's root: (body, certificate serial)."""
    from cryptography import x509

    context = ssl.create_default_context(cafile=str(cafile))
    raw = socket.create_connection(("127.0.0.1", d.https_port), timeout=10)
    with context.wrap_socket(raw, server_hostname=hostname) as tls:
        der = tls.getpeercert(binary_form=True)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert der is not None
    return data.decode(errors="replace"), x509.load_der_x509_certificate(der).serial_number


class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to the router on loopback, with the domain as SNI and Host (no DNS lookup of it)."""

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


class HttpsLoad:
    """Keep-alive HTTPS GETs from one thread: a renewal must not fail one of them."""

    def __init__(self, d: Dynod, hostname: str, cafile: Path) -> None:
        self.d, self.hostname, self.cafile = d, hostname, cafile
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> http.client.HTTPSConnection:
        return _LoopbackHTTPS(self.hostname, self.d.https_port,
                              context=ssl.create_default_context(cafile=str(self.cafile)), timeout=30)

    def _run(self) -> None:
        conn = self._connect()
        while not self._stop.is_set():
            try:
                conn.request("GET", "/", headers={"Host": self.hostname})
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{response.status} {body[:80]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = self._connect()
            time.sleep(0.01)
        conn.close()

    def __enter__(self) -> HttpsLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture
def acme_app(acme_env: tuple[Dynod, Pebble, DnsStub, str], tmp_path: Path) -> Iterator[str]:
    d = acme_env[0]
    name = f"t{secrets.token_hex(4)}"
    d.ctl("apps:create", name)
    yield name
    d.ctl("apps:destroy", "-a", name, "--confirm", name, check=False)


def test_a_domain_gets_its_certificate_served_by_sni_renewed_live_and_revoked_on_removal(
        acme_env: tuple[Dynod, Pebble, DnsStub, str], acme_app: str, tmp_path: Path) -> None:
    d, pebble, dns, token = acme_env
    domain = f"www-{token}-{acme_app}.example.test"
    dns.table[domain] = "127.0.0.1"
    d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", acme_app)
    d.ctl("ps:scale", "web=1", "-a", acme_app)
    d.up(acme_app, 1)
    assert "done" in d.ctl("certs:auto:enable", "-a", acme_app).stdout
    assert "Automatic Certificate Management is enabled" in d.ctl("certs:auto", "-a", acme_app).stdout
    # Added after ACM was turned on: it gets its certificate without another command.
    d.ctl("domains:add", domain, "-a", acme_app)
    issued = d.wait_for(lambda: (x := _domain(d, acme_app, domain)) and x["status"] == "issued" and x,
                        timeout=60, what="the certificate issued")
    shown = d.ctl("certs:auto", "-a", acme_app).stdout
    assert domain in shown and "Cert issued" in shown, shown
    assert issued["expires_at"]

    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_ca())
    body, serial = _https_get(d, domain, root)  # verifies the chain up to pebble's root and the name
    assert "web.1 hello" in body, body
    # The CA fetched the challenge from the router: the router's own access line says so.
    logs = d.logs(acme_app)
    assert 'path="/.well-known/acme-challenge/' in logs and "status=200" in logs, logs
    assert f"Certificate issued for {domain}" in logs, logs

    # Private state: the account key and the app's ACM file are 0600, in 0700 directories.
    acm_dir = d.root / "state" / "acm"
    for path in (acm_dir / "account-key.pem", acm_dir / "apps" / f"{acme_app}.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(acm_dir.stat().st_mode) == 0o700

    # Renewal (the certificate lives LIFETIME s, so it comes due at 2/3 of it) under HTTPS load:
    # the new certificate is served without a restart and without one failed request.
    with HttpsLoad(d, domain, root) as load:
        renewed = d.wait_for(lambda: (s := _https_get(d, domain, root)[1]) != serial and s,
                             timeout=LIFETIME + 30, interval=0.5, what="a renewed certificate served")
        time.sleep(0.5)
    assert load.failures == [], load.failures
    assert load.ok > 20
    assert f"Certificate issued for {domain}" in d.logs(acme_app)

    # State survives a dynod restart (kill -9): still issued, same account key.
    key_before = (acm_dir / "account-key.pem").read_bytes()
    d.kill9()
    d.start()
    assert _domain(d, acme_app, domain)["status"] == "issued"
    assert (acm_dir / "account-key.pem").read_bytes() == key_before

    # Removing the domain stops renewals and revokes what ACM issued for it.
    current = _https_get(d, domain, root)[1]
    d.ctl("domains:remove", domain, "-a", acme_app)
    d.wait_for(lambda: f"Certificate for {domain} revoked" in d.logs(acme_app), timeout=30,
               what="the revocation")
    assert pebble.cert_status(current) == "Revoked"
    assert _domain(d, acme_app, domain) is None
    state = json.loads((acm_dir / "apps" / f"{acme_app}.json").read_text())
    assert domain not in state["domains"]
    assert renewed != serial


def test_a_domain_pointing_elsewhere_fails_clearly_with_back_off_and_breaks_nothing_else(
        acme_env: tuple[Dynod, Pebble, DnsStub, str], acme_app: str) -> None:
    d, _pebble, dns, token = acme_env
    away = f"away-{token}-{acme_app}.example.test"
    good = f"good-{token}-{acme_app}.example.test"
    wildcard = f"*.wild-{token}-{acme_app}.example.test"
    dns.table[away] = "127.0.0.2"  # some other host: nothing of ours listens there
    dns.table[good] = "127.0.0.1"
    for hostname in (away, good, wildcard):
        d.ctl("domains:add", hostname, "-a", acme_app)
    d.ctl("certs:auto:enable", "-a", acme_app)
    failing = d.wait_for(lambda: (x := _domain(d, acme_app, away)) and x["status"] == "failing" and x,
                         timeout=60, what="the failing domain")
    assert "challenge failed" in failing["reason"] and "127.0.0.2" in failing["reason"], failing
    d.wait_for(lambda: _domain(d, acme_app, good)["status"] == "issued", timeout=60,
               what="the good domain issued despite its failing neighbour")
    wild = _domain(d, acme_app, wildcard)
    assert wild["status"] == "unsupported" and "HTTP-01" in wild["reason"], wild

    # (A retry may be running at the moment of a look, shown "In progress": look again.)
    out = d.wait_for(lambda: (text := d.ctl("certs:auto", "-a", acme_app).stdout) and "Failing" in text and text,
                     timeout=20, interval=0.2, what="certs:auto showing the failing domain")
    assert f"{away}: the challenge failed" in out and "next try" in out, out
    assert "Not supported" in out and "DNS-01" in out, out

    # Back-off, not a storm: with retry_base 1 s doubling to retry_max 4 s, 10 s hold a handful of tries.
    def tries() -> int:
        return d.logs(acme_app).count(f"Certificate for {away} failed")

    before = tries()
    time.sleep(10)
    during = tries() - before
    assert 1 <= during <= 5, during
    assert _domain(d, acme_app, away)["failures"] >= 3
    # The wildcard was never ordered.
    assert f"Certificate for {wildcard}" not in d.logs(acme_app)
    assert f"Certificate issued for {wildcard}" not in d.logs(acme_app)


def test_an_acme_server_that_is_down_is_reported_and_retried_once_it_is_back(
        acme_env: tuple[Dynod, Pebble, DnsStub, str], acme_app: str) -> None:
    d, pebble, dns, token = acme_env
    domain = f"later-{token}-{acme_app}.example.test"
    dns.table[domain] = "127.0.0.1"
    d.ctl("certs:auto:enable", "-a", acme_app)
    pebble.stop()
    try:
        d.ctl("domains:add", domain, "-a", acme_app)
        failing = d.wait_for(lambda: (x := _domain(d, acme_app, domain)) and x["status"] == "failing" and x,
                             timeout=60, what="the domain failing while the CA is down")
        assert "did not answer" in failing["reason"], failing
        assert d.ctl("apps:info", "-a", acme_app).returncode == 0  # the rest of the platform carries on
    finally:
        pebble.start()  # a fresh CA that forgot the account: dynod registers the same key again
    d.ctl("certs:auto:refresh", "-a", acme_app)
    d.wait_for(lambda: _domain(d, acme_app, domain)["status"] == "issued", timeout=60,
               what="the certificate issued once the CA is back")


def test_disabling_keeps_the_certificate_and_destroying_the_app_removes_acm_state(
        acme_env: tuple[Dynod, Pebble, DnsStub, str], acme_app: str) -> None:
    d, _pebble, dns, token = acme_env
    domain = f"gone-{token}-{acme_app}.example.test"
    dns.table[domain] = "127.0.0.1"
    d.ctl("domains:add", domain, "-a", acme_app)
    d.ctl("certs:auto:enable", "-a", acme_app)
    d.wait_for(lambda: _domain(d, acme_app, domain)["status"] == "issued", timeout=60, what="issued")
    state_file = d.root / "state" / "acm" / "apps" / f"{acme_app}.json"
    assert state_file.exists()
    d.ctl("certs:auto:disable", "-a", acme_app)
    assert not state_file.exists()
    assert "disabled" in d.ctl("certs:auto", "-a", acme_app).stdout
    assert domain in d.ctl("certs", "-a", acme_app).stdout  # still served until it expires
    refused = d.ctl("certs:auto:refresh", "-a", acme_app, check=False)
    assert refused.returncode == 1 and "not enabled" in refused.stderr and "Traceback" not in refused.stderr

    d.ctl("certs:auto:enable", "-a", acme_app)
    d.wait_for(lambda: _domain(d, acme_app, domain)["status"] == "issued", timeout=60, what="issued again")
    d.ctl("apps:destroy", "-a", acme_app, "--confirm", acme_app)
    d.wait_for(lambda: not state_file.exists(), timeout=30, what="the app's ACM state removed")
