"""Helpers for tests and benchmarks of the router: a router process driven synchronously, and dynos.

``RouterProcess`` starts ``python -m dynod.router`` on ephemeral loopback ports and speaks the control
protocol with plain blocking sockets, so tests need no event loop. ``Dyno`` is a small threaded HTTP
server on 127.0.0.1 whose behaviour a test picks per path (sleep, close, stream, echo...).
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..linux import process as processes
from .wire import BlockingMessageReader, encode


class RouterProcess:
    """A router with its own temp state dir; ``stop()`` ends it and its workers and removes the dir."""

    def __init__(self, *, workers: int = 1, https: bool = False, base_domain: str = "localhost",
                 extra: list[str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dynod-router-test-"))
        self.control_path = self.dir / "router.sock"
        self.argv = [sys.executable, "-m", "dynod.router", "--control", str(self.control_path),
                     "--http", "127.0.0.1:0", "--state-dir", str(self.dir / "state"),
                     "--workers", str(workers), "--base-domain", base_domain, *(extra or [])]
        if https:
            self.argv += ["--https", "127.0.0.1:0"]
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        try:
            self.conn = self._wait_for_control()
            self._reader = BlockingMessageReader(self.conn)
            self._pending: list[dict[str, Any]] = []
            self.send({"type": "attach"})
            hello = self.expect("hello")
        except BaseException:  # a router that never got ready (workers crashing) must not outlive the test
            if hasattr(self, "conn"):
                self.conn.close()
            self._end_process()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.pid: int = hello["pid"]
        self.http_port = self.https_port = 0
        for url in hello["listen"]:
            kind, _, hostport = url.partition("://")
            port = int(hostport.rsplit(":", 1)[1])
            if kind == "http":
                self.http_port = port
            else:
                self.https_port = port

    def _wait_for_control(self, timeout: float = 30.0) -> socket.socket:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"router exited: {self.process.stderr.read().decode()}")  # type: ignore
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.control_path))
                s.settimeout(10)
                return s
            except OSError:
                s.close()
                time.sleep(0.05)
        raise RuntimeError("router did not answer")

    def send(self, message: dict[str, Any]) -> None:
        self.conn.sendall(encode(message))

    def routes(self, apps: dict[str, Any], settle: float = 0.15) -> None:
        """Push a routes snapshot and give workers a moment to apply it."""
        self.send({"type": "routes", "apps": apps})
        time.sleep(settle)

    def messages(self, timeout: float = 0.5) -> list[dict[str, Any]]:
        """Everything the router sent within ``timeout`` (log lines, errors)."""
        out = self._pending
        self._pending = []
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                out.extend(self._reader.read(left))
            except EOFError:
                break
        return out

    def logs(self, timeout: float = 0.5) -> list[tuple[str, str]]:
        return [(m["app"], m["line"]) for m in self.messages(timeout) if m["type"] == "log"]

    def expect(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, m in enumerate(self._pending):
                if m["type"] == kind:
                    return self._pending.pop(i)
            self._pending.extend(self._reader.read(max(0.01, end - time.monotonic())))
        raise TimeoutError(f"no {kind!r} message from the router")

    def stats(self) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.control_path))
            s.sendall(encode({"type": "stats"}))
            replies = BlockingMessageReader(s)
            end = time.monotonic() + 10
            while (left := end - time.monotonic()) > 0:
                for reply in replies.read(left):
                    if reply["type"] == "stats":
                        return reply
        raise TimeoutError("no stats from the router")

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.stats()["workers"]]

    def pids(self) -> list[int]:
        return [self.pid, *self.worker_pids()]

    def stop(self) -> None:
        try:
            self.conn.close()
            self._end_process()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _end_process(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                processes.signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class _Server(http.server.ThreadingHTTPServer):
    # socketserver's backlog is 5: a burst of the router's connects overflowed it, and each dropped
    # handshake cost a SYN-ACK retransmit (1, 3, 7 s). App servers listen with 2048 (gunicorn's).
    request_queue_size = 2048


class Dyno:
    """A threaded HTTP/1.1 server on 127.0.0.1; ``handlers`` maps a path to what it does.

    Unlisted paths answer 200 with "<name> <method> <path>". Every request's headers are kept in
    ``seen`` so tests can check what the router forwarded.
    """

    def __init__(self, name: str, handlers: dict[str, Handler] | None = None, host: str = "127.0.0.1") -> None:
        self.name = name
        self.handlers = handlers or {}
        self.seen: list[dict[str, str]] = []
        self.hits = 0
        dyno = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as real app servers do; else delayed ACKs add 40 ms

            def _any(self) -> None:
                dyno.hits += 1
                dyno.seen.append(dict(self.headers.items()))
                handler = dyno.handlers.get(self.path.split("?")[0])
                if handler is not None:
                    handler(self)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = f"{dyno.name} {self.command} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server((host, 0), _Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.addr = f"{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def route(self) -> dict[str, str]:
        return {"name": self.name, "addr": self.addr}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Dyno behaviours the router's failure tests share (H12, H13, H15, H18 and 100 Continue).
def slow(h: http.server.BaseHTTPRequestHandler) -> None:
    """Answers only after 3 s: past a test router's request timeout (H12)."""
    time.sleep(3)
    h.send_response(200)
    h.send_header("Content-Length", "0")
    h.end_headers()


def close_silently(h: http.server.BaseHTTPRequestHandler) -> None:
    """Closes without a byte of answer (H13)."""
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def truncated(h: http.server.BaseHTTPRequestHandler) -> None:
    """Promises 100 bytes, sends 10, closes (H18)."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    h.wfile.flush()
    h.close_connection = True
    h.connection.shutdown(socket.SHUT_RDWR)


def stall(h: http.server.BaseHTTPRequestHandler) -> None:
    """Promises 100 bytes, sends 10, then goes quiet for 3 s (H15)."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    h.wfile.flush()
    time.sleep(3)
    h.close_connection = True


def echo_after_continue(h: http.server.BaseHTTPRequestHandler) -> None:
    """Sends 100 Continue, reads the body, answers 201 with it."""
    h.send_response_only(100)
    h.end_headers()
    body = h.rfile.read(int(h.headers["Content-Length"]))
    h.send_response(201)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def self_signed_pair(domain: str) -> tuple[str, str]:
    """(cert_pem, key_pem) of a throwaway self-signed certificate for ``domain``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def process_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
