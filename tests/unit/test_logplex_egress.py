"""Where drains may connect: addresses that reach dynod's host are refused."""

from __future__ import annotations

import ipaddress

import pytest
import trio

from dynod.errors import UserError
from dynod.logplex.egress import DrainEgress, DrainRefused, is_own_address

OWN = {"203.0.113.7", "2001:db8::7"}


def egress(**kw) -> DrainEgress:
    kw.setdefault("blocked_networks", (ipaddress.ip_network("198.18.0.0/16"),))
    return DrainEgress(own_address=lambda ip: str(ip) in OWN, **kw)


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("169.254.169.254", "link-local"), ("fe80::1%eth0", "link-local"),
    ("224.0.0.1", "multicast"), ("255.255.255.255", "broadcast"),
    ("203.0.113.7", "own host"), ("2001:db8::7", "own host"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),
    ("198.18.0.5", "dynos or builds"), ("::ffff:198.18.3.4", "dynos or builds"),
])
def test_addresses_that_reach_the_host_are_refused(address: str, why: str) -> None:
    refusal = egress().refusal(address)
    assert refusal is not None and why in refusal


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "10.1.2.3"])
def test_other_addresses_are_allowed(address: str) -> None:
    assert egress().refusal(address) is None


def test_allow_local_lets_loopback_through_but_never_the_dyno_network() -> None:
    rule = egress(allow_local=True)
    assert rule.refusal("127.0.0.1") is None and rule.refusal("169.254.169.254") is None
    assert "dynos or builds" in (rule.refusal("198.18.0.1") or "")


def test_own_address_asks_the_kernel() -> None:
    assert is_own_address(ipaddress.ip_address("127.0.0.1"))
    assert not is_own_address(ipaddress.ip_address("192.0.2.123"))  # TEST-NET-1: nobody's


async def test_names_are_resolved_and_every_address_checked() -> None:
    class Resolver(trio.abc.HostnameResolver):
        async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
            answers = {b"mixed.test": ["93.184.216.34", "127.0.0.1"], b"good.test": ["93.184.216.34"]}
            return [(2, 1, 6, "", (a, port)) for a in answers[host if isinstance(host, bytes) else host.encode()]]

        async def getnameinfo(self, sockaddr, flags):
            raise NotImplementedError

    previous = trio.socket.set_custom_hostname_resolver(Resolver())
    try:
        assert await egress().resolve("good.test", 514) == ["93.184.216.34"]
        with pytest.raises(DrainRefused, match="mixed.test resolves to 127.0.0.1, and 127.0.0.1 is a loopback"):
            await egress().resolve("mixed.test", 514)
        with pytest.raises(UserError, match="is refused: mixed.test resolves to 127.0.0.1") as err:
            await egress().check("mixed.test", 514, "syslog://mixed.test")
        assert err.value.status == 422 and "allow_local_drains" in str(err.value)
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
