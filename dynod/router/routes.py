"""The route table: which app a Host names, and which of its up web dynos gets a request. No I/O.

dynod sends a full snapshot each time (never a diff), so a table is immutable and replacing it is one
assignment: requests already routed keep their dyno, new requests see the new table at once.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError

POLICIES = ("random", "p2c")
# ACME's HTTP-01 challenge (RFC 8555 8.3): the router answers it for an app's domains before routing.
CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class DynoRoute:
    name: str  # web.1: what the log line names
    host: str
    port: int
    # Built once per snapshot rather than per request: the pool's key, and the name for the log line.
    addr: tuple[str, int] = field(init=False, compare=False)
    name_bytes: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "addr", (self.host, self.port))
        object.__setattr__(self, "name_bytes", self.name.encode())


@dataclass(frozen=True, slots=True)
class AppRoute:
    name: str
    domains: tuple[str, ...]
    maintenance: bool
    policy: str
    booting: bool  # web dynos exist but none is up yet: hold requests (H20)
    crashed: bool  # every web dyno crashed (H10)
    dynos: tuple[DynoRoute, ...]
    # Pending ACME HTTP-01 challenges of the app's domains: token -> key authorization.
    challenges: Mapping[bytes, bytes] = field(default_factory=dict)
    sleeping: bool = False  # an eco app asleep: hold its requests (H20) and ask dynod to wake it

    def to_wire(self) -> dict[str, Any]:
        """This app's entry in a routes snapshot (docs/router.md); ``from_wire`` reads it back."""
        return {
            "domains": list(self.domains), "maintenance": self.maintenance, "policy": self.policy,
            "booting": self.booting, "crashed": self.crashed, "sleeping": self.sleeping,
            "acme_challenges": {t.decode(): a.decode() for t, a in self.challenges.items()},
            "dynos": [{"name": d.name, "addr": f"{d.host}:{d.port}"} for d in self.dynos],
        }

    @classmethod
    def from_wire(cls, name: Any, entry: Any) -> AppRoute:
        """Validate one app's snapshot entry; UserError names the first thing wrong. Absent keys take
        their defaults (no domains, not in maintenance, random, no dynos)."""
        if not isinstance(name, str) or not name:
            raise _fail(f"app name {name!r} must be a non-empty string")
        if not isinstance(entry, Mapping):
            raise _fail(f"app {name!r} must map to an object")
        domains = entry.get("domains", [])
        if not isinstance(domains, list) or not all(isinstance(d, str) and d for d in domains):
            raise _fail(f"app {name!r}: domains must be a list of host names")
        policy = entry.get("policy", "random")
        if policy not in POLICIES:
            raise _fail(f"app {name!r}: policy {policy!r} is not one of {', '.join(POLICIES)}")
        dynos_in = entry.get("dynos", [])
        if not isinstance(dynos_in, list):
            raise _fail(f"app {name!r}: dynos must be a list")
        dynos = []
        for d in dynos_in:
            if not isinstance(d, Mapping) or not isinstance(d.get("name"), str):
                raise _fail(f"app {name!r}: each dyno needs a name and an addr")
            host, port = _parse_addr(name, d.get("addr"))
            dynos.append(DynoRoute(d["name"], host, port))
        return cls(
            name=name, domains=tuple(normalize_domain(d) for d in domains),
            maintenance=_bool(name, entry, "maintenance"), policy=policy,
            booting=_bool(name, entry, "booting"), crashed=_bool(name, entry, "crashed"),
            dynos=tuple(dynos), challenges=_challenges(name, entry.get("acme_challenges", {})),
            sleeping=_bool(name, entry, "sleeping"),
        )


def _fail(message: str) -> UserError:
    return UserError(f"Bad routes snapshot: {message}.")


def _parse_addr(app: str, addr: Any) -> tuple[str, int]:
    if not isinstance(addr, str) or ":" not in addr:
        raise _fail(f"app {app!r}: dyno addr {addr!r} must be 'IPv4:PORT'")
    host, _, port_s = addr.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        port = int(port_s)
    except ValueError:
        raise _fail(f"app {app!r}: dyno addr {addr!r} must be 'IPv4:PORT'") from None
    if not 0 < port < 65536:
        raise _fail(f"app {app!r}: dyno addr {addr!r} has no valid port")
    return host, port


def _bool(app: str, entry: Mapping[str, Any], key: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise _fail(f"app {app!r}: {key} must be true or false")
    return value


def normalize_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _challenges(app: str, value: Any) -> dict[bytes, bytes]:
    # Tokens are base64url (RFC 8555 8.3), key authorizations token.thumbprint: nothing else is ever served.
    if not isinstance(value, Mapping):
        raise _fail(f"app {app!r}: acme_challenges must map token -> key authorization")
    for token, answer in value.items():
        if not (isinstance(token, str) and token and set(token) <= _TOKEN_CHARS and isinstance(answer, str)
                and answer.startswith(token + ".") and set(answer) <= _TOKEN_CHARS | {"."}):
            raise _fail(f"app {app!r}: acme_challenges has a malformed token or key authorization")
    return {t.encode(): a.encode() for t, a in value.items()}


def decode_apps(apps: Any) -> tuple[AppRoute, ...]:
    """The apps of a snapshot's {"myapp": {...}} object, each validated by ``AppRoute.from_wire``."""
    if not isinstance(apps, Mapping):
        raise _fail("apps must be an object of app name -> route")
    return tuple(AppRoute.from_wire(name, entry) for name, entry in apps.items())


def challenge_answer(app: AppRoute, method: bytes, target: bytes) -> bytes | None:
    """The key authorization for a GET of /.well-known/acme-challenge/TOKEN, if the app has that token."""
    if method != b"GET" or not target.startswith(CHALLENGE_PREFIX):
        return None
    return app.challenges.get(target[len(CHALLENGE_PREFIX):])


class RouteTable:
    """Host -> app, built once per snapshot."""

    __slots__ = ("apps", "base_domain", "_by_host")

    def __init__(self, apps: Iterable[AppRoute], base_domain: str) -> None:
        self.base_domain = normalize_domain(base_domain)
        self.apps: dict[str, AppRoute] = {}
        self._by_host: dict[bytes, AppRoute] = {}
        for app in apps:
            self.apps[app.name] = app
            self._by_host[f"{app.name}.{self.base_domain}".encode()] = app
        # Custom domains go second: an app's default host name is never taken over by another app.
        for app in self.apps.values():
            for domain in app.domains:
                self._by_host.setdefault(domain.encode(), app)

    @classmethod
    def from_snapshot(cls, apps: Any, base_domain: str) -> RouteTable:
        """Validate dynod's {"myapp": {...}} snapshot; UserError names the first thing wrong."""
        return cls(decode_apps(apps), base_domain)

    def lookup(self, host: bytes) -> AppRoute | None:
        """The app a Host header names (any port, any case, a trailing dot allowed), or None."""
        app = self._by_host.get(host)
        if app is not None:
            return app
        if host.startswith(b"["):
            return None  # an IPv6 literal never names an app
        name = host.partition(b":")[0].rstrip(b".").lower()
        return self._by_host.get(name)


def choose_dyno(app: AppRoute, in_flight: Mapping[tuple[str, int], int], rng: random.Random,
                exclude: Iterable[DynoRoute] = ()) -> DynoRoute | None:
    """Heroku's random choice, or power-of-two-choices by requests in flight; None when none is left."""
    dynos = app.dynos
    if exclude:
        skip = set(exclude)
        dynos = tuple(d for d in dynos if d not in skip)
    if not dynos:
        return None
    if len(dynos) == 1:
        return dynos[0]
    if app.policy == "p2c":
        a, b = rng.sample(dynos, 2)
        load_a = in_flight.get(a.addr, 0)
        load_b = in_flight.get(b.addr, 0)
        return a if load_a <= load_b else b
    return dynos[rng.randrange(len(dynos))]
