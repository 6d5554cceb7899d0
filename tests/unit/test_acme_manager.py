"""The ACM task's decisions with a scripted CA (the real protocol is in tests/integration/test_acme.py):
rate limits, a dead CA, the self-check, removal and disabling while an order runs, destroyed apps.

The "router" here is a loopback trio server that answers the manager's own challenges, as the real
router does from the route snapshot.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from dynod.acm.issuer import AcmeFailure, Challenge, Order
from dynod.acm.manager import CertManager, self_check_address
from dynod.errors import NotFound
from dynod.settings import AcmSettings, RouterSettings, Settings


@dataclass
class App:
    name: str


@dataclass
class FakeLedger:
    domains: dict[str, list[str]] = field(default_factory=dict)
    certs: dict[tuple[str, str], str] = field(default_factory=dict)

    def list_apps(self) -> list[App]:
        return [App(n) for n in self.domains]

    def get_app(self, app: str) -> App:
        if app not in self.domains:
            raise NotFound(f"Couldn't find that app: {app}.")
        return App(app)

    def list_domains(self, app: str) -> list[str]:
        self.get_app(app)
        return list(self.domains[app])

    def add_cert(self, app: str, domain: str, cert_pem: str, key_pem: str) -> None:
        self.certs[(app, domain)] = cert_pem


class FakeLogs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def emit(self, app: str, source: str, dyno: str, message: str) -> None:
        self.lines.append((app, message))


def _cert_for(domain: str, key_pem: str, lifetime: float) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(seconds=lifetime))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class FakeIssuer:
    """Scripted: ``failures[domain]`` are raised in turn by finish(); ``during_finish`` runs inside it."""

    def __init__(self, lifetime: float = 90 * 86400) -> None:
        self.lifetime = lifetime
        self.failures: dict[str, list[AcmeFailure]] = {}
        self.begun: list[str] = []
        self.finished: list[str] = []
        self.revoked: list[str] = []
        self.during_finish = None
        self.lock = threading.Lock()

    def begin(self, domain: str) -> Order:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.begun.append(domain)
        key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        token = f"tok{len(self.begun)}"
        return Order(domain, key, (Challenge(token, f"{token}.thumb", None),), None)

    def finish(self, order: Order, timeout: float) -> str:
        self.finished.append(order.domain)
        if self.during_finish is not None:
            self.during_finish(order)
        queued = self.failures.get(order.domain)
        if queued:
            raise queued.pop(0)
        return _cert_for(order.domain, order.key_pem, self.lifetime)

    def revoke(self, cert_pem: str) -> None:
        self.revoked.append(cert_pem)


class LoopbackRouter:
    """Answers GET /.well-known/acme-challenge/TOKEN from the manager's challenges, like the router."""

    def __init__(self) -> None:
        self.manager: CertManager | None = None
        self.ledger: FakeLedger | None = None
        self.port = 0
        self.silent = False  # a broken router: answers 404 to everything
        self.requests = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            self.requests += 1
            lines = data.decode().split("\r\n")
            path = lines[0].split()[1]
            host = next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("host:"))
            assert self.manager is not None and self.ledger is not None
            app = next((a for a, doms in self.ledger.domains.items() if host in doms), None)
            answer = None if self.silent or app is None else self.manager.challenges(app).get(path.rsplit("/", 1)[1])
            if answer is None:
                await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                                      % (len(answer), answer.encode()))


class Harness:
    def __init__(self, tmp: Path, router: LoopbackRouter, issuer: FakeIssuer, **acm: float) -> None:
        self.now = float(int(time.time()))  # the certificates the scripted CA makes are dated by the real clock
        self.ledger = FakeLedger()
        self.logs = FakeLogs()
        self.routes_changes = 0
        settings = Settings(state_dir=tmp, router=RouterSettings(http=[f"127.0.0.1:{router.port}"]),
                            acm=replace(AcmSettings(), **acm))

        async def flushed() -> None:
            pass

        def changed() -> None:
            self.routes_changes += 1

        self.manager = CertManager(settings, ledger=self.ledger, logs=self.logs, routes_changed=changed,
                                   routes_flushed=flushed, clock=lambda: self.now)
        self.manager._issuer = issuer  # noqa: SLF001 - the scripted CA instead of the acme library
        router.manager, router.ledger = self.manager, self.ledger
        self.issuer = issuer

    def status(self, app: str, domain: str) -> dict:
        return next(d for d in self.manager.status(app)["domains"] if d["hostname"] == domain)

    def log_text(self) -> str:
        return "\n".join(m for _a, m in self.logs.lines)


@pytest.fixture
async def env(tmp_path: Path, nursery: trio.Nursery):
    router = LoopbackRouter()
    await nursery.start(router.serve)

    def make(issuer: FakeIssuer | None = None, **acm: float) -> Harness:
        return Harness(tmp_path, router, issuer or FakeIssuer(), **acm)

    make.router = router  # type: ignore[attr-defined]
    return make


async def test_an_order_publishes_the_token_checks_it_through_the_router_installs_and_withdraws(env):
    h = env()
    h.ledger.domains["myapp"] = ["www.a.test"]
    h.manager.enable("myapp")
    await h.manager.run_pass()
    assert h.issuer.finished == ["www.a.test"]
    assert ("myapp", "www.a.test") in h.ledger.certs
    assert env.router.requests == 1  # the self-check went through the router before the CA was asked
    assert h.manager.challenges("myapp") == {}  # withdrawn after the order
    status = h.status("myapp", "www.a.test")
    assert status["status"] == "issued" and status["expires_at"]
    assert "Certificate issued for www.a.test" in h.log_text()
    # Renewal is due 30 days before expiry, not before.
    await h.manager.run_pass()
    assert h.issuer.begun == ["www.a.test"]
    h.now += 61 * 86400
    await h.manager.run_pass()
    assert h.issuer.begun == ["www.a.test", "www.a.test"]


async def test_a_router_that_does_not_serve_the_token_means_the_ca_is_never_asked(env, monkeypatch):
    monkeypatch.setattr("dynod.acm.manager._SELF_CHECK_TIMEOUT", 0.3)
    env.router.silent = True
    h = env()
    h.ledger.domains["myapp"] = ["www.a.test"]
    h.manager.enable("myapp")
    await h.manager.run_pass()
    assert h.issuer.finished == []
    status = h.status("myapp", "www.a.test")
    assert status["status"] == "failing" and "router did not serve the challenge" in status["reason"]


async def test_a_rate_limit_pauses_every_order_and_a_refresh_does_not_lift_it(env):
    h = env(rate_limit_pause=3600, retry_base=60)
    h.ledger.domains["myapp"] = ["a.test", "b.test"]
    h.issuer.failures["a.test"] = [AcmeFailure("the ACME server refused the order: too many", rate_limited=True)]
    h.manager.enable("myapp")
    await h.manager.run_pass()
    assert h.issuer.begun == ["a.test"]  # b.test was due too, but waits out the pause
    assert h.status("myapp", "a.test")["status"] == "failing"
    h.now += 600
    h.manager.refresh("myapp")
    await h.manager.run_pass()
    assert h.issuer.begun == ["a.test"]
    h.now += 3001
    await h.manager.run_pass()
    assert sorted(h.issuer.begun) == ["a.test", "a.test", "b.test"]


async def test_a_dead_ca_is_tried_once_per_back_off_not_once_per_domain(env):
    h = env(retry_base=60)
    h.ledger.domains["one"] = ["a.test"]
    h.ledger.domains["two"] = ["b.test"]
    h.issuer.failures["a.test"] = [AcmeFailure("the ACME server at X did not answer", unreachable=True)]
    h.manager.enable("one")
    h.manager.enable("two")
    await h.manager.run_pass()
    assert h.issuer.begun == ["a.test"]
    h.now += 61
    await h.manager.run_pass()
    assert sorted(h.issuer.begun) == ["a.test", "a.test", "b.test"]


async def test_back_off_doubles_per_failure(env):
    h = env(retry_base=60, retry_max=1000)
    h.ledger.domains["myapp"] = ["away.test"]
    h.issuer.failures["away.test"] = [AcmeFailure("the challenge failed: refused") for _ in range(6)]
    h.manager.enable("myapp")
    waits = []
    for _ in range(6):
        await h.manager.run_pass()
        nxt = datetime.datetime.fromisoformat(h.status("myapp", "away.test")["next_attempt_at"].replace("Z", "+00:00"))
        waits.append(round(nxt.timestamp() - h.now))
        h.now = nxt.timestamp()
    assert waits == [60, 120, 240, 480, 960, 1000]
    assert len(h.issuer.begun) == 6


async def test_a_domain_removed_while_its_order_runs_is_not_installed_and_is_revoked(env):
    h = env()
    h.ledger.domains["myapp"] = ["www.a.test"]
    h.issuer.during_finish = lambda order: h.ledger.domains["myapp"].remove("www.a.test")
    h.manager.enable("myapp")
    await h.manager.run_pass()
    assert h.ledger.certs == {} and len(h.issuer.revoked) == 1


async def test_disabling_while_an_order_runs_installs_nothing_and_keeps_no_state(env, tmp_path):
    h = env()
    h.ledger.domains["myapp"] = ["www.a.test", "two.a.test"]
    h.issuer.during_finish = lambda order: h.manager.disable("myapp")
    h.manager.enable("myapp")
    await h.manager.run_pass()
    assert h.ledger.certs == {} and len(h.issuer.finished) == 1  # the second domain was not ordered
    assert not (tmp_path / "acm" / "apps" / "myapp.json").exists()
    assert h.manager.status("myapp")["enabled"] is False


async def test_removed_domains_and_destroyed_apps_have_their_certificates_revoked_and_state_dropped(env, tmp_path):
    h = env()
    h.ledger.domains["myapp"] = ["a.test", "b.test"]
    h.manager.enable("myapp")
    await h.manager.run_pass()
    assert len(h.ledger.certs) == 2
    h.ledger.domains["myapp"].remove("a.test")
    await h.manager.run_pass()
    assert len(h.issuer.revoked) == 1 and "a.test left the app" in h.log_text()
    state = json.loads((tmp_path / "acm" / "apps" / "myapp.json").read_text())
    assert list(state["domains"]) == ["b.test"]
    del h.ledger.domains["myapp"]
    await h.manager.run_pass()
    assert len(h.issuer.revoked) == 2
    assert not (tmp_path / "acm" / "apps" / "myapp.json").exists()


async def test_a_wildcard_is_reported_and_never_ordered(env):
    h = env()
    h.ledger.domains["myapp"] = ["*.a.test"]
    h.manager.enable("myapp")
    await h.manager.run_pass()
    assert h.issuer.begun == []
    assert h.status("myapp", "*.a.test")["status"] == "unsupported"


async def test_api_side_errors_are_one_line(env):
    h = env()
    with pytest.raises(NotFound):
        h.manager.enable("nosuchapp")
    h.ledger.domains["myapp"] = []
    with pytest.raises(Exception, match="not enabled on myapp"):
        h.manager.refresh("myapp")


def test_the_self_check_reaches_a_wildcard_listener_on_loopback():
    assert self_check_address("0.0.0.0:80") == ("127.0.0.1", 80)
    assert self_check_address(":8080") == ("127.0.0.1", 8080)
    assert self_check_address("[::]:80") == ("::1", 80)
    assert self_check_address("192.0.2.7:80") == ("192.0.2.7", 80)


async def test_a_domain_removed_and_added_back_at_once_gets_a_fresh_order(env):
    h = env()
    h.ledger.domains["myapp"] = ["www.a.test"]
    h.manager.enable("myapp")
    await h.manager.run_pass()
    h.ledger.domains["myapp"].remove("www.a.test")
    h.ledger.certs.clear()  # what the ledger's remove_domain does
    h.manager.domain_removed("myapp", "www.a.test")
    h.ledger.domains["myapp"].append("www.a.test")
    assert h.status("myapp", "www.a.test")["status"] == "pending"  # not "issued" with no certificate
    await h.manager.run_pass()
    assert len(h.issuer.revoked) == 1 and h.issuer.begun == ["www.a.test", "www.a.test"]
    assert ("myapp", "www.a.test") in h.ledger.certs


async def test_a_new_app_of_a_destroyed_apps_name_does_not_inherit_acm(env, tmp_path):
    h = env()
    h.ledger.domains["myapp"] = ["www.a.test"]
    h.manager.enable("myapp")
    await h.manager.run_pass()
    del h.ledger.domains["myapp"]
    h.manager.app_destroyed("myapp")
    h.ledger.domains["myapp"] = ["www.a.test"]  # created again before ACM's next pass
    assert h.manager.status("myapp")["enabled"] is False
    await h.manager.run_pass()
    assert len(h.issuer.revoked) == 1 and h.issuer.begun == ["www.a.test"]
    assert not (tmp_path / "acm" / "apps" / "myapp.json").exists()
