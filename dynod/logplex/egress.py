"""Where a drain may connect: no address that reaches dynod's host from the inside.

dynod sends drains from the host's own network namespace, as root. A drain URL is written by
whoever holds the API, so without a rule ``syslog://127.0.0.1:6379`` or
``https://169.254.169.254/...`` would have dynod write log lines (the tenant's own bytes) to
services that trust the host: a server-side request forgery. Refused, unless the operator allows
them (``[logs] allow_local_drains``, which the tests use for their loopback receivers):

- loopback (127.0.0.0/8, ::1) and the unspecified address (0.0.0.0 and :: reach the host too);
- link-local (169.254.0.0/16, where cloud metadata services live; fe80::/10);
- multicast and the limited broadcast address;
- the host's own addresses, whatever the interface (found by asking the kernel whether it would
  bind a socket to the address, so an address added later counts too);
- the dyno and build subnets (``[network] subnet`` and ``build_subnet``): the dynos of every app
  and the builds live there.

IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry. Names are resolved here and
every address checked; the connection then goes to the checked address itself, never to the name
again, so a DNS answer that changes between the check and the connect (rebinding) changes nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from ..errors import UserError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DrainRefused(OSError):
    """The drain's host is an address drains may not reach; the message says which and why."""


def is_own_address(ip: IPAddress) -> bool:
    """True when the kernel would bind a socket to ``ip``: one of this host's addresses."""
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class DrainEgress:
    """The rule for one dynod: which addresses its drains may reach."""

    allow_local: bool = False
    blocked_networks: tuple[IPNetwork, ...] = ()  # the dyno and build subnets
    own_address: Callable[[IPAddress], bool] = field(default=is_own_address, compare=False)

    @classmethod
    def for_host(cls, *, allow_local: bool, dyno_subnets: Iterable[str]) -> DrainEgress:
        return cls(allow_local=allow_local,
                   blocked_networks=tuple(ipaddress.ip_network(n, strict=False) for n in dyno_subnets))

    def refusal(self, address: str) -> str | None:
        """Why a drain may not connect to ``address`` (an IP literal), or None when it may."""
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for network in self.blocked_networks:
            if ip.version == network.version and ip in network:
                return f"{ip} is in {network}, a network of dynod's dynos or builds"
        if self.allow_local:
            return None
        if ip.is_loopback:
            return f"{ip} is a loopback address"
        if ip.is_unspecified:
            return f"{ip} is the unspecified address, which reaches this host"
        if ip.is_link_local:
            return f"{ip} is a link-local address"
        if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
            return f"{ip} is a multicast or broadcast address"
        if self.own_address(ip):
            return f"{ip} is an address of dynod's own host"
        return None

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to, checked; DrainRefused when any of them is refused.

        A name with one refused address among good ones is refused as a whole: it is either a
        mistake or an attempt, and neither should depend on which answer comes first.
        """
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
        addresses: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = str(sockaddr[0])
            why = self.refusal(address)
            if why is not None:
                raise DrainRefused(why if host == address else f"{host} resolves to {address}, and {why}")
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OSError(f"{host} has no address")
        return addresses

    async def check(self, host: str, port: int, url: str) -> None:
        """The API's check when a drain is added: one UserError line when it may not be.

        A name that does not resolve yet is accepted (a receiver may come up later, as on
        Heroku); the sender checks again on every connect.
        """
        try:
            await self.resolve(host, port)
        except DrainRefused as exc:
            raise UserError(f"Drain URL {url!r} is refused: {exc}; drains may not reach dynod's host or "
                            "its dynos (an operator may allow local drains with [logs] "
                            "allow_local_drains).", status=422, code="invalid_params") from None
        except OSError:
            pass
