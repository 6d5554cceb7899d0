"""Drains against real receivers on loopback: a strict RFC 5424/6587 syslog receiver (plain and
TLS) and an HTTPS receiver speaking Logplex's drain protocol, each with a test CA."""

import base64
import datetime
import ipaddress
import os
import re
import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dynod.errors import UserError
from dynod.logplex import LogStream
from dynod.logplex.egress import DrainEgress

pytestmark = pytest.mark.integration

# ---------------------------------------------------------------------------------------------
# A test CA and a server certificate for 127.0.0.1.


@dataclass
class LoopbackCA:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def server_context(self, tmp: Path) -> ssl.SSLContext:
        (tmp / "server.pem").write_bytes(self.cert_pem)
        (tmp / "server.key").write_bytes(self.key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tmp / "server.pem", tmp / "server.key")
        return ctx


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def test_ca() -> LoopbackCA:
    return make_loopback_ca()


def make_loopback_ca() -> LoopbackCA:
    """A throwaway CA and a certificate it signed for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(_name("dynod test CA")).issuer_name(_name("dynod test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage, critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return LoopbackCA(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


# ---------------------------------------------------------------------------------------------
# A strict syslog receiver: RFC 6587 octet counting around RFC 5424 messages, nothing else.

RFC5424 = re.compile(
    rb"<(?P<pri>0|[1-9]\d{0,2})>1 "
    rb"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)) "
    rb"(?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
    rb"(?P<sd>-|(?:\[[^\]]*\])+)(?: (?P<msg>.*))?",
    re.S,
)


@dataclass
class Frame:
    pri: int
    ts: str
    host: str
    app: str
    procid: str
    msg: str


def parse_frames(buffer: bytearray) -> list[Frame]:
    """Take every complete frame off the front of ``buffer``; any violation fails the test."""
    out = []
    pos = 0
    while pos < len(buffer):
        space = buffer.find(b" ", pos, pos + 12)
        if space < 0:
            assert len(buffer) - pos < 11, f"no length prefix in {bytes(buffer[pos:pos + 40])!r}"
            break
        length_text = bytes(buffer[pos:space])
        assert re.fullmatch(rb"[1-9]\d*", length_text), f"bad octet count {length_text!r}"
        end = space + 1 + int(length_text)
        if len(buffer) < end:
            break
        message = bytes(buffer[space + 1:end])
        pos = end
        m = RFC5424.fullmatch(message)
        assert m is not None, f"not RFC 5424: {message[:120]!r}"
        assert int(m["pri"]) <= 191
        assert m["msgid"] == b"-" and m["sd"] == b"-"
        datetime.datetime.fromisoformat(m["ts"].decode())  # a real date, not just the shape
        out.append(Frame(int(m["pri"]), m["ts"].decode(), m["host"].decode(), m["app"].decode(),
                         m["procid"].decode(), (m["msg"] or b"").decode("utf-8")))
    del buffer[:pos]
    return out


@dataclass
class SyslogReceiver:
    ssl_context: ssl.SSLContext | None = None
    reading: bool = True  # False: accept and never read (a stuck receiver)
    rcvbuf: int | None = None
    frames: list[Frame] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _scope: trio.CancelScope | None = None
    _arrived: trio.Event = field(default_factory=trio.Event)

    async def start(self, nursery: trio.Nursery) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        await sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        listener: trio.abc.Listener = trio.SocketListener(sock)
        if self.ssl_context is not None:
            listener = trio.SSLListener(listener, self.ssl_context)
        scope = self._scope = trio.CancelScope()

        async def serve() -> None:
            with scope:
                async with listener, trio.open_nursery() as conns:
                    while True:
                        stream = await listener.accept()
                        self.connections += 1
                        conns.start_soon(self._handle, stream)

        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()

    def stop(self) -> None:
        """Close the listener and every connection (the receiver goes down)."""
        assert self._scope is not None
        self._scope.cancel()

    async def _handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            if not self.reading:
                await trio.sleep_forever()
            buffer = bytearray()
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                buffer += data
                self.frames.extend(parse_frames(buffer))
                self._arrived.set()
                self._arrived = trio.Event()

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while not predicate(self.frames):
                await self._arrived.wait()


def app_messages(frames: list[Frame]) -> list[str]:
    return [f.msg for f in frames if f.app == "app"]


def make_stream(tmp_path: Path, test_ca: LoopbackCA | None = None, **kw) -> LogStream:
    kw.setdefault("backoff_min", 0.05)
    kw.setdefault("backoff_max", 0.2)
    kw.setdefault("drain_egress", DrainEgress(allow_local=True))  # the receivers listen on loopback
    if test_ca is not None:
        kw["ssl_context"] = test_ca.client_context
    return LogStream(tmp_path / "logs", **kw)


# ---------------------------------------------------------------------------------------------


async def test_syslog_drain_delivers_strict_frames_in_order(tmp_path):
    ls = make_stream(tmp_path)
    async with trio.open_nursery() as nursery:
        receiver = SyslogReceiver()
        await receiver.start(nursery)
        await nursery.start(ls.run)
        drain = ls.add_drain("myapp", f"syslog://127.0.0.1:{receiver.port}")
        for i in range(300):
            ls.emit("myapp", "app", "web.1", f"line {i} caf\u00e9")
        ls.emit("myapp", "dynod", "router", "at=info method=GET path=/")
        ls.emit("other-app", "app", "web.1", "not for this drain")
        await receiver.wait_for(lambda f: len(f) >= 301)
        nursery.cancel_scope.cancel()
    assert app_messages(receiver.frames) == [f"line {i} caf\u00e9" for i in range(300)]
    first, router = receiver.frames[0], receiver.frames[300]
    assert (first.pri, first.host, first.app, first.procid) == (190, drain["token"], "app", "web.1")
    assert (router.pri, router.app, router.procid) == (158, "dynod", "router")
    assert router.msg == "at=info method=GET path=/"
    assert len(receiver.frames) == 301


async def test_syslog_tls_drain_with_test_ca(tmp_path, test_ca):
    ls = make_stream(tmp_path, test_ca)
    async with trio.open_nursery() as nursery:
        receiver = SyslogReceiver(ssl_context=test_ca.server_context(tmp_path))
        await receiver.start(nursery)
        await nursery.start(ls.run)
        ls.add_drain("myapp", f"syslog+tls://127.0.0.1:{receiver.port}")
        for i in range(50):
            ls.emit("myapp", "app", "web.2", f"secret {i}")
        await receiver.wait_for(lambda f: len(f) >= 50)
        nursery.cancel_scope.cancel()
    assert app_messages(receiver.frames) == [f"secret {i}" for i in range(50)]


async def test_tls_drain_refuses_an_untrusted_certificate(tmp_path, test_ca):
    ls = make_stream(tmp_path)  # the system trust store: the test CA is unknown
    async with trio.open_nursery() as nursery:
        receiver = SyslogReceiver(ssl_context=test_ca.server_context(tmp_path))
        await receiver.start(nursery)
        await nursery.start(ls.run)
        ls.add_drain("myapp", f"syslog+tls://127.0.0.1:{receiver.port}")
        ls.emit("myapp", "app", "web.1", "must not leak")
        with trio.move_on_after(0.5):
            while not ls.statistics()["drains"][0]["failures"]:
                await trio.sleep(0.02)
        stats = ls.statistics()["drains"][0]
        nursery.cancel_scope.cancel()
    assert receiver.frames == []
    assert stats["failures"] >= 1 and "CERTIFICATE_VERIFY_FAILED" in stats["last_error"]


async def test_drain_down_and_back_up_delivers_what_was_buffered(tmp_path):
    ls = make_stream(tmp_path)
    async with trio.open_nursery() as nursery:
        receiver = SyslogReceiver()
        await receiver.start(nursery)
        await nursery.start(ls.run)
        ls.add_drain("myapp", f"syslog://127.0.0.1:{receiver.port}")
        ls.emit("myapp", "app", "web.1", "before")
        await receiver.wait_for(lambda f: len(f) >= 1)
        receiver.stop()
        await trio.sleep(0.1)  # the drain notices the close
        for i in range(100):
            ls.emit("myapp", "app", "web.1", f"while down {i}")
        await trio.sleep(0.3)  # a few refused reconnects
        assert not ls.statistics()["drains"][0]["connected"]
        again = SyslogReceiver(port=receiver.port)
        await again.start(nursery)
        await again.wait_for(lambda f: len(f) >= 100)
        nursery.cancel_scope.cancel()
    assert app_messages(again.frames) == [f"while down {i}" for i in range(100)]
    assert ls.statistics()["drains"][0]["dropped"] == 0


async def test_overflow_while_down_is_reported_as_l10_in_band_and_in_app_log(tmp_path):
    ls = make_stream(tmp_path, drain_buffer=10, notice_interval=0.2)
    async with trio.open_nursery() as nursery:
        receiver = SyslogReceiver()
        await receiver.start(nursery)
        port = receiver.port
        receiver.stop()  # nothing listens: the drain is down from the start
        await nursery.start(ls.run)
        ls.add_drain("myapp", f"syslog://127.0.0.1:{port}")
        for i in range(25):
            ls.emit("myapp", "app", "web.1", f"n {i}")
        await trio.sleep(0.5)
        local = [line for line in ls.recent("myapp") if "dynod[logplex]" in line]
        again = SyslogReceiver(port=port)
        await again.start(nursery)
        await again.wait_for(lambda f: len(f) >= 11)
        nursery.cancel_scope.cancel()
    l10 = again.frames[0]
    assert (l10.pri, l10.app, l10.procid) == (172, "dynod", "logplex")
    assert re.fullmatch(r"Error L10 \(output buffer overflow\): 15 messages dropped since \S+\+00:00\.",
                        l10.msg)
    assert app_messages(again.frames) == [f"n {i}" for i in range(15, 25)]  # the newest 10 kept
    assert len(local) == 1 and "15 messages dropped" in local[0] and f"127.0.0.1:{port}" in local[0]


async def test_stuck_drain_never_affects_tails_or_other_drains(tmp_path):
    ls = make_stream(tmp_path, send_timeout=0.5)
    async with trio.open_nursery() as nursery:
        stuck = SyslogReceiver(reading=False, rcvbuf=4096)
        healthy = SyslogReceiver()
        await stuck.start(nursery)
        await healthy.start(nursery)
        await nursery.start(ls.run)
        ls.add_drain("myapp", f"syslog://127.0.0.1:{stuck.port}")
        ls.add_drain("myapp", f"syslog://127.0.0.1:{healthy.port}")
        tailed = []

        async def tail():
            async for line in ls.tail("myapp", 0):
                tailed.append(line)

        nursery.start_soon(tail)
        ls.emit("myapp", "dynod", "api", "warm-up: both drains connect before the flood")
        await healthy.wait_for(lambda f: len(f) >= 1)
        # 25k lines/s: well within what the healthy receiver (parsing strictly, in this same
        # process) takes, while the stuck one's 4 KiB window fills at once.
        total, step = 20_000, 250
        started = time.perf_counter()
        for batch in range(total // step):
            for i in range(step):
                ls.emit("myapp", "app", "web.1", f"{batch * step + i} " + "x" * 100)
            await trio.sleep(0.01)
        emit_time = time.perf_counter() - started
        with trio.move_on_after(10):
            await healthy.wait_for(lambda f: len(app_messages(f)) >= total, timeout=10)
        assert len(app_messages(healthy.frames)) == total, ls.statistics()["drains"]
        await trio.sleep(0.6)  # past the stuck drain's send timeout
        stats = {d["url"]: d for d in ls.statistics()["drains"]}
        nursery.cancel_scope.cancel()
    assert app_messages(healthy.frames)[-1].startswith(f"{total - 1} ")
    assert [int(m.split()[0]) for m in app_messages(healthy.frames)] == list(range(total))
    tailed_numbers = [int(line.split(": ", 1)[1].split()[0]) for line in tailed if " app[web.1]: " in line]
    assert tailed_numbers == list(range(total))  # the tail missed nothing
    # 80 batches: had emit waited on the stuck drain's 0.5 s send timeout even once per batch, this
    # would be 40 s. The bound is loose so that a busy host (the sleeps alone are 0.8 s) cannot fail it.
    assert emit_time < 15.0
    stuck_stats = stats[f"syslog://127.0.0.1:{stuck.port}"]
    assert stuck_stats["dropped"] > 0 and stuck_stats["failures"] >= 1
    assert stats[f"syslog://127.0.0.1:{healthy.port}"]["dropped"] == 0


async def test_removed_drain_stops_sending(tmp_path):
    ls = make_stream(tmp_path)
    async with trio.open_nursery() as nursery:
        receiver = SyslogReceiver()
        await receiver.start(nursery)
        await nursery.start(ls.run)
        drain = ls.add_drain("myapp", f"syslog://127.0.0.1:{receiver.port}")
        ls.emit("myapp", "app", "web.1", "one")
        await receiver.wait_for(lambda f: len(f) >= 1)
        ls.remove_drain("myapp", drain["id"])
        ls.emit("myapp", "app", "web.1", "two")
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert app_messages(receiver.frames) == ["one"]


async def test_drains_survive_a_restart(tmp_path):
    first = make_stream(tmp_path)
    async with trio.open_nursery() as nursery:
        receiver = SyslogReceiver()
        await receiver.start(nursery)
        await nursery.start(first.run)
        first.add_drain("myapp", f"syslog://127.0.0.1:{receiver.port}")
        nursery.cancel_scope.cancel()
    second = make_stream(tmp_path)
    async with trio.open_nursery() as nursery:
        receiver2 = SyslogReceiver(port=receiver.port)
        await receiver2.start(nursery)
        await nursery.start(second.run)
        second.emit("myapp", "app", "web.1", "after restart")
        await receiver2.wait_for(lambda f: len(f) >= 1)
        nursery.cancel_scope.cancel()
    assert app_messages(receiver2.frames) == ["after restart"]


# ---------------------------------------------------------------------------------------------
# An HTTPS receiver checking Logplex's drain protocol on every POST.


@dataclass
class HttpsReceiver:
    ssl_context: ssl.SSLContext
    token: str = ""
    auth: tuple[str, str] | None = None
    statuses: list[int] = field(default_factory=list)  # answers to give first, then 200
    frames: list[Frame] = field(default_factory=list)
    posts: list[dict] = field(default_factory=list)
    port: int = 0

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(trio.serve_ssl_over_tcp, self._handle, 0, self.ssl_context)
        self.port = listeners[0].transport_listener.socket.getsockname()[1]

    async def _handle(self, stream: trio.SSLStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    body = bytearray()
                    while True:
                        part = conn.next_event()
                        if part is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(65536))
                        elif isinstance(part, h11.Data):
                            body += part.data
                        elif isinstance(part, h11.EndOfMessage):
                            break
                    status = self._check(event, headers, body)
                    answer = h11.Response(status_code=status, headers=[("content-length", "0")])
                    await stream.send_all(conn.send(answer))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return

    def _check(self, request: h11.Request, headers: dict[str, str], body: bytearray) -> int:
        assert request.method == b"POST" and request.target == b"/logs?app=1"
        assert headers["content-type"] == "application/logplex-1"
        assert headers["logplex-drain-token"] == self.token
        assert re.fullmatch(r"[0-9A-F]{32}", headers["logplex-frame-id"])
        if self.auth is not None:
            expected = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            assert headers["authorization"] == f"Basic {expected}"
        frames = parse_frames(body)
        assert not body, "a POST body holds whole frames only"
        assert int(headers["logplex-msg-count"]) == len(frames)
        assert all(f.host == "host" for f in frames)
        self.posts.append({"frame_id": headers["logplex-frame-id"], "count": len(frames)})
        if self.statuses:
            return self.statuses.pop(0)
        self.frames.extend(frames)
        return 200


async def test_https_drain_speaks_logplex_protocol(tmp_path, test_ca):
    ls = make_stream(tmp_path, test_ca)
    async with trio.open_nursery() as nursery:
        receiver = HttpsReceiver(test_ca.server_context(tmp_path), auth=("user", "p@ss"))
        await receiver.start(nursery)
        await nursery.start(ls.run)
        drain = ls.add_drain("myapp", f"https://user:p%40ss@127.0.0.1:{receiver.port}/logs?app=1")
        receiver.token = drain["token"]
        for i in range(2000):  # in steps the 1024-line drain buffer can hold
            ls.emit("myapp", "app", "web.1", f"https {i}")
            if i % 200 == 199:
                await trio.sleep(0.02)
        with trio.fail_after(10):
            while len(receiver.frames) < 2000:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert app_messages(receiver.frames) == [f"https {i}" for i in range(2000)]
    assert ls.statistics()["drains"][0]["dropped"] == 0
    assert len(receiver.posts) > 1 and all(p["count"] <= 1024 for p in receiver.posts)


async def test_https_drain_retries_a_failed_post_with_the_same_frame_id(tmp_path, test_ca):
    ls = make_stream(tmp_path, test_ca)
    async with trio.open_nursery() as nursery:
        receiver = HttpsReceiver(test_ca.server_context(tmp_path), statuses=[503, 500])
        await receiver.start(nursery)
        await nursery.start(ls.run)
        drain = ls.add_drain("myapp", f"https://127.0.0.1:{receiver.port}/logs?app=1")
        receiver.token = drain["token"]
        ls.emit("myapp", "app", "web.1", "eventually")
        with trio.fail_after(5):
            while not receiver.frames:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert app_messages(receiver.frames) == ["eventually"]
    assert len(receiver.posts) == 3 and len({p["frame_id"] for p in receiver.posts}) == 1


# ---------------------------------------------------------------------------------------------
# Where drains may connect (logplex/egress.py), with the default rule and real sockets.


async def test_the_default_rule_never_connects_to_a_loopback_receiver(tmp_path):
    ls = make_stream(tmp_path, drain_egress=None)  # LogStream's own default: local drains refused
    async with trio.open_nursery() as nursery:
        receiver = SyslogReceiver()
        await receiver.start(nursery)
        await nursery.start(ls.run)
        with pytest.raises(UserError, match="127.0.0.1 is a loopback address"):
            await ls.check_drain_target(f"syslog://127.0.0.1:{receiver.port}")
        # Even a drain that got past the API (an old drains.json) is checked on every connect.
        ls.add_drain("myapp", f"syslog://localhost:{receiver.port}")
        ls.emit("myapp", "app", "web.1", "must not arrive")
        await trio.sleep(0.5)
        stats = next(d for d in ls.statistics()["drains"] if d["app"] == "myapp")
        nursery.cancel_scope.cancel()
    assert receiver.connections == 0 and receiver.frames == []
    assert "DrainRefused" in stats["last_error"] and "loopback" in stats["last_error"], stats


@pytest.mark.parametrize("scheme", ["syslog", "http"])
async def test_a_name_that_rebinds_to_loopback_after_the_check_is_refused_at_connect(tmp_path, scheme):
    class Rebinding(trio.abc.HostnameResolver):
        """First a public address (the API's check passes), then loopback (the connect)."""

        calls = 0

        async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
            if host not in (b"rebind.test", "rebind.test"):
                return await trio.socket.getaddrinfo(host, port, family, type, proto, flags)
            Rebinding.calls += 1
            address = "93.184.216.34" if Rebinding.calls == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

        async def getnameinfo(self, sockaddr, flags):
            raise NotImplementedError

    ls = make_stream(tmp_path, drain_egress=None)
    previous = trio.socket.set_custom_hostname_resolver(Rebinding())
    try:
        async with trio.open_nursery() as nursery:
            receiver = SyslogReceiver()
            await receiver.start(nursery)
            await nursery.start(ls.run)
            url = f"{scheme}://rebind.test:{receiver.port}/"
            if scheme == "syslog":
                url = url.rstrip("/")
            await ls.check_drain_target(url)  # resolves to the public address: accepted
            ls.add_drain("myapp", url)
            ls.emit("myapp", "app", "web.1", "must not arrive")
            await trio.sleep(0.5)
            stats = next(d for d in ls.statistics()["drains"] if d["app"] == "myapp")
            nursery.cancel_scope.cancel()
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    assert Rebinding.calls >= 2 and receiver.connections == 0  # a TCP listener: any connect would count
    assert "rebind.test resolves to 127.0.0.1" in stats["last_error"], stats


async def test_a_receiver_that_catches_up_after_the_socket_filled_loses_nothing(tmp_path):
    """A receiver that stops reading until the socket is full, then reads faster than lines come,
    gets every line: the lines that arrive while the socket is full are written as soon as the
    kernel frees any room, not only once poll(2) calls the socket writable (a third of the send
    buffer free, far more than a 64-line drain buffer holds)."""
    ls = make_stream(tmp_path, drain_buffer=64)
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        async with trio.open_nursery() as nursery:
            await nursery.start(ls.run)
            ls.add_drain("myapp", f"syslog://127.0.0.1:{listener.getsockname()[1]}")
            ls.emit("myapp", "dynod", "api", "warm-up")
            conn, _ = await listener.accept()
            pad = "x" * 1000
            sent = 0

            def emit(count: int) -> None:
                nonlocal sent
                for _ in range(count):
                    ls.emit("myapp", "app", "web.1", f"{sent} {pad}")
                    sent += 1

            def drain_stats() -> dict:
                return ls.statistics()["drains"][0]

            # Fill the socket (the receiver does not read) until a write is cut short.
            with trio.fail_after(20):
                while not drain_stats()["deferrals"]:
                    emit(16)
                    await trio.sleep(0)
            assert drain_stats()["dropped"] == 0
            received = bytearray()

            def read_now(nbytes: int) -> None:
                """Read without yielding to trio: the drain's task gets no turn meanwhile, as
                when a round of flooding pumps runs before it."""
                goal = len(received) + nbytes
                while len(received) < goal and select.select([conn], [], [], 0.2)[0]:
                    received.extend(os.read(conn.fileno(), goal - len(received)))

            # Catch up: each step the receiver reads 64 KiB (a loopback segment) while 40 KiB of
            # new lines arrive, and the drain's task never runs: only writes from the stream's
            # own offer() can move them. 30 steps bring 1,200 lines, 19 times the drain buffer.
            for _ in range(30):
                read_now(64 * 1024)
                emit(40)
            # Then read everything.
            with trio.fail_after(20):
                while drain_stats()["buffered"] or drain_stats()["sent"] < sent + 1:
                    with trio.move_on_after(0.05):
                        received.extend(await conn.recv(1 << 20))
                while True:
                    with trio.move_on_after(0.2) as idle:
                        data = await conn.recv(1 << 20)
                        received.extend(data)
                    if idle.cancelled_caught:
                        break
            stats = drain_stats()
            conn.close()
            nursery.cancel_scope.cancel()
    frames = parse_frames(received)
    numbers = [int(m.split()[0]) for m in app_messages(frames)]
    assert stats["dropped"] == 0, stats
    assert numbers == list(range(sent)), (len(numbers), sent)
    assert not [f for f in frames if "L10" in f.msg]
