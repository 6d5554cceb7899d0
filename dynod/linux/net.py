"""The host side of dyno networking: one bridge, one veth per dyno, addresses from a pool.

pyroute2 (netlink) runs on one dedicated thread: its synchronous IPRoute keeps a private asyncio
loop per thread, so every call must come from the same one, and never from trio's loop thread.
A dyno's veth pair dies with its network namespace, so stopping a dyno needs no netlink call at
all (a delete costs ~16 ms); ``prune`` removes pairs whose dyno vanished while dynod was down.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import trio
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import UserError

T = TypeVar("T")
VETH_PREFIX = "dy"
DYNO_IFNAME = "eth0"


def veth_name(dyno_id: str) -> str:
    # IFNAMSIZ is 16 with the NUL: "dy" + 12 hex digits is unique enough and always fits.
    return VETH_PREFIX + hashlib.sha1(dyno_id.encode()).hexdigest()[:12]


class AddressPool:
    """Pure: hands out host addresses of the dyno subnet; the first one is the bridge's."""

    def __init__(self, subnet: str) -> None:
        self.network = ipaddress.IPv4Network(subnet)
        hosts = self.network.hosts()
        self.gateway = str(next(hosts))
        self._free_from = hosts
        self._in_use: set[str] = set()
        self._released: list[str] = []

    @property
    def prefix(self) -> int:
        return self.network.prefixlen

    def claim(self, address: str) -> None:
        """Mark an address taken (a re-adopted dyno keeps the one it has)."""
        self._in_use.add(address)

    def allocate(self) -> str:
        while self._released:
            address = self._released.pop()
            if address not in self._in_use:
                self._in_use.add(address)
                return address
        for host in self._free_from:
            address = str(host)
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
        if found:
            index = found[0]
        else:
            ipr.link("add", ifname=self.bridge, kind="bridge")
            index = ipr.link_lookup(ifname=self.bridge)[0]
        addresses = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
        if self.pool.gateway not in addresses:
            ipr.addr("add", index=index, address=self.pool.gateway, prefixlen=self.pool.prefix)
        ipr.link("set", index=index, state="up")
        self._bridge_index = index
        return index

    def _attach(self, dyno_id: str, pid: int) -> str:
        ipr = self._iproute()
        index = self._bridge_index if self._bridge_index is not None else self._ensure_bridge()
        name = veth_name(dyno_id)
        try:
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": DYNO_IFNAME, "net_ns_pid": pid})
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: a leftover of a dyno with the same id; replace it
                raise
            ipr.link("del", ifname=name)
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": DYNO_IFNAME, "net_ns_pid": pid})
        veth = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=veth, master=index, state="up")
        return name

    def _links(self) -> list[str]:
        return [link.get_attr("IFLA_IFNAME") for link in self._iproute().get_links()]

    def _delete(self, names: Iterable[str]) -> None:
        ipr = self._iproute()
        for name in names:
            try:
                ipr.link("del", ifname=name)
            except NetlinkError as exc:
                if exc.code != 19:  # ENODEV: already gone with its namespace
                    raise

    # -- trio API ---------------------------------------------------------------------------
    async def ensure_bridge(self) -> None:
        await self._call(self._ensure_bridge)

    async def attach(self, dyno_id: str, pid: int) -> str:
        """Wire dyno ``pid``'s netns to the bridge; returns the host-side veth name."""
        return await self._call(lambda: self._attach(dyno_id, pid))

    async def prune(self, keep_dyno_ids: Iterable[str]) -> list[str]:
        """Delete veths of ours whose dyno is not in ``keep_dyno_ids``."""
        keep = {veth_name(d) for d in keep_dyno_ids}

        def work() -> list[str]:
            stale = [n for n in self._links() if n.startswith(VETH_PREFIX) and len(n) == 14 and n not in keep]
            self._delete(stale)
            return stale

        return await self._call(work)

    async def teardown(self) -> None:
        """Remove the bridge (and any veth of ours left on it)."""

        def work() -> None:
            ours = [n for n in self._links() if n.startswith(VETH_PREFIX) and len(n) == 14]
            self._delete(ours)
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
