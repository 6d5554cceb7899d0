"""The router's command line: listen addresses, the base domain, workers and every timeout.

Heroku's numbers are the defaults; each one is a flag so tests can make a 30 s timeout take 0.3 s.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class RouterOptions:
    control: Path
    state_dir: Path
    http: list[str] = field(default_factory=list)
    https: list[str] = field(default_factory=list)
    base_domain: str = "localhost"
    workers: int = 2
    connect_timeout: float = 5.0  # H19, then a retry on another dyno
    connect_attempts: int = 3  # dynos tried per request before H19/H21
    request_timeout: float = 30.0  # H12: request sent -> first response byte
    idle_timeout: float = 55.0  # H15: rolling window once the response has started
    boot_timeout: float = 75.0  # H20: how long a request waits for a booting app
    header_timeout: float = 10.0  # a client must finish its request head (slowloris)
    keepalive_timeout: float = 90.0  # an idle client connection between requests
    max_connections: int = 10000  # per worker; beyond it a connection gets a 503 and is closed
    pool_idle: int = 64  # idle keep-alive connections kept per dyno per worker
    pool_idle_timeout: float = 50.0  # an idle dyno connection older than this is not reused
    log_buffer: int = 10000  # log lines kept while no dynod is attached (oldest dropped)
    drain_timeout: float = 10.0  # on stop, how long in-flight requests may finish

    def to_json(self) -> str:
        d = asdict(self)
        d["control"], d["state_dir"] = str(self.control), str(self.state_dir)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> RouterOptions:
        d = json.loads(text)
        d["control"], d["state_dir"] = Path(d["control"]), Path(d["state_dir"])
        return cls(**d)


def parse_listen(addr: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' (all IPv4 addresses) or '[v6]:PORT' -> (host, port)."""
    host, sep, port_s = addr.rpartition(":")
    if not sep:
        raise UserError(f"Listen address {addr!r} needs a port: use HOST:PORT, e.g. 127.0.0.1:8080.")
    host = host.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
        port = int(port_s)
    except ValueError:
        raise UserError(f"Listen address {addr!r} must be an IP and a port, e.g. 127.0.0.1:8080.") from None
    if not 0 <= port < 65536:
        raise UserError(f"Listen address {addr!r} has no valid port (0-65535).")
    return host, port


_FLAG_HELP = {
    "connect_timeout": "seconds to connect to a dyno before trying another (H19)",
    "connect_attempts": "dynos tried per request",
    "request_timeout": "seconds to the first response byte (H12)",
    "idle_timeout": "rolling idle seconds once a response started (H15)",
    "boot_timeout": "seconds a request waits for a booting app (H20)",
    "header_timeout": "seconds a client has to send its request head",
    "keepalive_timeout": "seconds an idle client connection is kept",
    "max_connections": "client connections per worker",
    "pool_idle": "idle dyno connections kept per dyno per worker",
    "pool_idle_timeout": "seconds an idle dyno connection may be reused",
    "log_buffer": "log lines kept while no dynod is attached",
    "drain_timeout": "seconds in-flight requests get on stop",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dynod.router", description="dynod's HTTP router")
    p.add_argument("--control", required=True, type=Path, help="unix socket dynod talks to")
    p.add_argument("--http", action="append", default=[], metavar="ADDR")
    p.add_argument("--https", action="append", default=[], metavar="ADDR")
    p.add_argument("--base-domain", default="localhost")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--state-dir", required=True, type=Path)
    for f in fields(RouterOptions):
        if f.name in _FLAG_HELP:
            p.add_argument("--" + f.name.replace("_", "-"), type=int if f.type == "int" else float,
                           default=f.default, help=_FLAG_HELP[f.name])
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"Bad router arguments: {message}; see python -m dynod.router --help.")


def parse_args(argv: list[str]) -> RouterOptions:
    parser = build_parser()
    parser.__class__ = _Parser  # one UserError line instead of argparse's exit
    ns = parser.parse_args(argv)
    opts = RouterOptions(**{f.name: getattr(ns, f.name) for f in fields(RouterOptions)})
    if not opts.http and not opts.https:
        raise UserError("The router needs at least one --http or --https address.")
    if opts.workers < 1 or opts.workers > 64:
        raise UserError(f"--workers {opts.workers}: use 1 to 64.")
    for f in fields(RouterOptions):
        value = getattr(opts, f.name)
        if f.name in _FLAG_HELP and value <= 0:
            raise UserError(f"--{f.name.replace('_', '-')} must be positive, not {value}.")
    for addr in opts.http + opts.https:
        parse_listen(addr)
    return opts
