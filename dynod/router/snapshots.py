"""The snapshots dynod sends the router, and the router its workers: routes and certificates.

Each is a frozen dataclass with one ``encode`` (to the framed line that goes on the control socket) and
one ``decode`` (from that line's decoded message, validated: UserError names the first thing wrong).
A snapshot is always whole, never a diff, so the receiver replaces what it had in one assignment.

- ``RoutesSnapshot``: every app with its host names, flags and up web dynos (dynod -> router -> workers).
- ``CertsSnapshot``: the per-domain certificate and key PEMs (dynod -> router).
- ``StoredCertsSnapshot``: where the router's parent wrote each of those, as one PEM file (router ->
  workers: ssl loads a chain only from a file, and the keys then never cross the socketpair again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .routes import AppRoute, decode_apps
from .wire import encode


def _of_type(message: Mapping[str, Any], kind: str) -> None:
    if message.get("type") != kind:
        raise UserError(f"Expected a {kind!r} control message, got {message.get('type')!r}.")


@dataclass(frozen=True, slots=True)
class RoutesSnapshot:
    apps: tuple[AppRoute, ...]

    def encode(self) -> bytes:
        return encode({"type": "routes", "apps": {app.name: app.to_wire() for app in self.apps}})

    @classmethod
    def decode(cls, message: Mapping[str, Any]) -> RoutesSnapshot:
        _of_type(message, "routes")
        return cls(decode_apps(message.get("apps")))


@dataclass(frozen=True, slots=True)
class DomainCert:
    domain: str
    cert_pem: str
    key_pem: str


@dataclass(frozen=True, slots=True)
class CertsSnapshot:
    """The shapes only: whether each pair can serve its domain is checked where it is stored
    (``tls.store_certs``), and by ``RouterControl.push_certs`` before it is sent."""

    certs: tuple[DomainCert, ...]

    def encode(self) -> bytes:
        return encode({"type": "certs", "certs": [
            {"domain": c.domain, "cert_pem": c.cert_pem, "key_pem": c.key_pem} for c in self.certs]})

    @classmethod
    def decode(cls, message: Mapping[str, Any]) -> CertsSnapshot:
        _of_type(message, "certs")
        certs = message.get("certs")
        if not isinstance(certs, list):
            raise UserError("Bad certs message: certs must be a list of {domain, cert_pem, key_pem}.")
        for entry in certs:
            if not isinstance(entry, Mapping) or not all(
                    isinstance(entry.get(k), str) for k in ("domain", "cert_pem", "key_pem")):
                raise UserError("Bad certs message: each cert needs domain, cert_pem and key_pem strings.")
        return cls(tuple(DomainCert(e["domain"], e["cert_pem"], e["key_pem"]) for e in certs))


@dataclass(frozen=True, slots=True)
class StoredCertsSnapshot:
    certs: tuple[tuple[str, Path], ...]  # (domain, PEM file holding its chain and key)

    def encode(self) -> bytes:
        return encode({"type": "certs", "certs": [[domain, str(path)] for domain, path in self.certs]})

    @classmethod
    def decode(cls, message: Mapping[str, Any]) -> StoredCertsSnapshot:
        _of_type(message, "certs")
        certs = message.get("certs")
        if not isinstance(certs, list) or not all(
                isinstance(e, list) and len(e) == 2 and all(isinstance(v, str) for v in e) for e in certs):
            raise UserError("Bad stored certs message: certs must be a list of [domain, path].")
        return cls(tuple((domain, Path(path)) for domain, path in certs))
