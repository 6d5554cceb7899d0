"""The host side of dyno networking: one bridge, one veth per dyno, addresses from a pool.

pyroute2 (netlink) runs on one dedicated thread: its synchronous IPRoute keeps a private asyncio
loop per thread, so every call must come from the same one, and never from trio's loop thread.
A dyno's veth pair dies with its network namespace, so stopping a dyno needs no netlink call at
all (a delete costs ~16 ms); ``prune`` removes pairs whose dyno vanished while dynod was down.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import trio
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import UserError
from .veth import VETH_PREFIX, veth_name

T = TypeVar("T")
DYNO_IFNAME = "eth0"


def bridge_mac(bridge: str) -> str:
    """A fixed, locally administered MAC for a bridge, derived from its name.

    Without one, Linux gives a bridge the lowest MAC of its ports and changes it whenever that
    port leaves: the other dynos keep sending their replies to the old address until their ARP
    entry goes stale, longer than the router's 30 s, and requests in flight end as H12s.
    """
    digest = hashlib.sha256(bridge.encode()).digest()
    return ":".join(f"{octet:02x}" for octet in (0x02, *digest[:5]))  # 0x02: local, unicast


def _ours(ifname: str) -> bool:
    return ifname.startswith(VETH_PREFIX) and len(ifname) == 10 and all(c in "0123456789abcdef" for c in ifname[2:])


class AddressPool:
    """Pure: hands out host addresses of the dyno subnet; the first one is the bridge's."""

    def __init__(self, subnet: str) -> None:
        self.network = ipaddress.IPv4Network(subnet)
        hosts = self.network.hosts()
        self.gateway = str(next(hosts))
        self._free_from = hosts
        self._in_use: set[str] = set()
        # Oldest first, and only once fresh addresses run out: a released address's old veth
        # may still be going away with its network namespace (the kernel frees netns lazily).
        self._released: deque[str] = deque()

    @property
    def prefix(self) -> int:
        return self.network.prefixlen

    def claim(self, address: str) -> None:
        """Mark an address taken (a re-adopted dyno keeps the one it has)."""
        self._in_use.add(address)

    def allocate(self) -> str:
        for host in self._free_from:
            address = str(host)
            if address not in self._in_use:
                self._in_use.add(address)
                return address
        while self._released:
            address = self._released.popleft()
            if address not in self._in_use:
                self._in_use.add(address)
                return address
        raise UserError(f"No free dyno address left in {self.network}: widen [network] subnet.")

    def release(self, address: str | None) -> None:
        if address and address in self._in_use:
            self._in_use.discard(address)
            self._released.append(address)

    def statistics(self) -> dict[str, int]:
        return {"in_use": len(self._in_use), "size": self.network.num_addresses - 2}


class Network:
    def __init__(self, bridge: str, subnet: str) -> None:
        self.bridge = bridge
        self.pool = AddressPool(subnet)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dynod-netlink")
        self._ipr: IPRoute | None = None
        self._bridge_index: int | None = None

    async def _call(self, fn: Callable[[], T]) -> T:
        future = self._executor.submit(fn)
        return await trio.to_thread.run_sync(future.result)

    def _iproute(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    # -- run on the netlink thread ----------------------------------------------------------
    def _ensure_bridge(self) -> int:
        ipr = self._iproute()
        found = ipr.link_lookup(ifname=self.bridge)
        mac = bridge_mac(self.bridge)
        if found:
            index = found[0]
            if ipr.get_links(index)[0].get_attr("IFLA_ADDRESS") != mac:
                ipr.link("set", index=index, address=mac)  # a bridge made by an older dynod
        else:
            self._refuse_a_taken_subnet()
            ipr.link("add", ifname=self.bridge, kind="bridge", address=mac)
            index = ipr.link_lookup(ifname=self.bridge)[0]
        addresses = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
        if self.pool.gateway not in addresses:
            ipr.addr("add", index=index, address=self.pool.gateway, prefixlen=self.pool.prefix)
        ipr.link("set", index=index, state="up")
        self._bridge_index = index
        return index

    def _refuse_a_taken_subnet(self) -> None:
        """UserError if another link has an address in our subnet: a second dynod on the host
        with the same [network] subnet or build_subnet. Both bridges would route it, and one's
        dynos or builds would get none of their packets back (a build's DNS times out, ~70 s)."""
        ipr = self._iproute()
        for addr in ipr.get_addr(family=socket.AF_INET):
            network = ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}").network
            if network.overlaps(self.pool.network):
                link = ipr.get_links(addr["index"])[0].get_attr("IFLA_IFNAME")
                raise UserError(f"{self.pool.network} (for bridge {self.bridge}) is already routed on {link} "
                                f"({network}): another dynod on this host uses it; give each its own "
                                "[network] subnet and build_subnet.")

    def _attach(self, address: str, pid: int) -> str:
        """One netlink request and one sysfs write on a dyno's start path (it was four requests,
        ~8 ms median on a busy host, now ~4): the pair is made with its host end already on the
        bridge and up, its peer born in the dyno's namespace. The peer stays down until the dyno,
        told to go, brings it up: nothing crosses the port before it is isolated."""
        ipr = self._iproute()
        index = self._bridge_index if self._bridge_index is not None else self._ensure_bridge()
        name = veth_name(address)
        try:
            self._add_veth(name, index, pid)
        except NetlinkError as exc:
            if exc.code != 17:
                raise
            # EEXIST: a leftover of an earlier dyno at this address, if it hangs on our bridge;
            # anything else is another dynod's, whose subnet overlaps ours.
            if name not in self._our_veths():
                raise UserError(f"A network link {name} for {address} exists and is not on bridge {self.bridge}: "
                                "another dynod on this host uses the same subnet; give each its own "
                                "[network] subnet.") from None
            ipr.link("del", ifname=name)
            self._add_veth(name, index, pid)
        # An isolated bridge port talks to the host (the router) but never to another isolated
        # port: one app's dyno cannot reach another's behind the router's back, as on Heroku.
        try:
            with open(f"/sys/class/net/{name}/brport/isolated", "w") as f:
                f.write("1")
        except OSError:  # no sysfs here, or a kernel before 4.18's file: the netlink way
            ipr.brport("set", index=ipr.link_lookup(ifname=name)[0], isolated=1)
        return name

    def _add_veth(self, name: str, bridge_index: int, pid: int) -> None:
        self._iproute().link("add", ifname=name, kind="veth", master=bridge_index, state="up",
                             peer={"ifname": DYNO_IFNAME, "net_ns_pid": pid})

    def _links(self) -> list[str]:
        return [link.get_attr("IFLA_IFNAME") for link in self._iproute().get_links()]

    def _our_veths(self) -> list[str]:
        """The veths on this dynod's bridge. Only those: other dynods on the host (tests run
        several) name theirs the same way, and their veths are not ours to touch."""
        try:
            # The bridge's own list of its ports: a netlink dump of every link on the host is
            # parsed at ~1 ms a link, 0.6 s of a restart with 500 dynos (issue 16).
            return sorted(name for name in os.listdir(f"/sys/class/net/{self.bridge}/brif") if _ours(name))
        except FileNotFoundError:
            if os.path.isdir("/sys/class/net"):
                return []  # sysfs is there and the bridge is not: no ports
        except OSError:
            pass  # no sysfs to read: netlink's dump
        found = self._iproute().link_lookup(ifname=self.bridge)
        if not found:
            return []
        return [link.get_attr("IFLA_IFNAME") for link in self._iproute().get_links()
                if link.get_attr("IFLA_MASTER") == found[0] and _ours(link.get_attr("IFLA_IFNAME"))]

    def _delete(self, names: Iterable[str]) -> None:
        ipr = self._iproute()
        for name in names:
            try:
                ipr.link("del", ifname=name)
            except NetlinkError as exc:
                if exc.code != 19:  # ENODEV: already gone with its namespace
                    raise

    # -- trio API ---------------------------------------------------------------------------
    @property
    def bridge_made(self) -> bool:
        """Whether this dynod has made (or taken over) its bridge: a veth may be hung on it."""
        return self._bridge_index is not None

    async def ensure_bridge(self) -> None:
        await self._call(self._ensure_bridge)

    async def check_subnet(self) -> None:
        """UserError if the subnet is another link's (see _refuse_a_taken_subnet); nothing made."""

        def work() -> None:
            # The bridge looked up by name, not every link dumped and parsed (~1 ms a link: ~1 s
            # of a dynod restart with 1,000 dynos' veths on the host).
            if not self._iproute().link_lookup(ifname=self.bridge):
                self._refuse_a_taken_subnet()

        await self._call(work)

    async def attach(self, address: str, pid: int) -> str:
        """Wire the netns of ``pid`` (the dyno at ``address``) to the bridge; returns the veth's name."""
        return await self._call(lambda: self._attach(address, pid))

    async def prune(self, keep_addresses: Iterable[str]) -> list[str]:
        """Delete veths of ours whose dyno's address is not in ``keep_addresses``."""
        keep = {veth_name(a) for a in keep_addresses}

        def work() -> list[str]:
            stale = [n for n in self._our_veths() if n not in keep]
            self._delete(stale)
            return stale

        return await self._call(work)

    async def teardown(self) -> None:
        """Remove the bridge (and any veth of ours left on it)."""

        def work() -> None:
            self._delete(self._our_veths())
            if self.bridge in self._links():
                self._delete([self.bridge])

        await self._call(work)

    def close(self) -> None:
        def work() -> None:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None

        self._executor.submit(work).result()
        self._executor.shutdown(wait=True)
