"""A dyno's veth made by the spawner right after the fork, with one raw netlink request.

The same pair dynod.linux.net makes (its host end on the bridge and up, its peer born as eth0,
down, in the dyno's network namespace, the bridge port isolated), but from the spawner, before it
answers the spawn: dynod then sends go as soon as it hears the pid, with no wire round trip and
no thread hand-offs. The spawner is single-threaded and forks, so no netlink library here
(pyroute2 runs asyncio and threads): the request is packed by hand, as ip(8) would send it.

Anything unusual (a leftover link of the same name, a kernel that refuses) is left to dynod: the
spawner reports the dyno unwired and dynod wires it as before, where those cases are handled.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import os
import socket
import struct

RTM_NEWLINK = 16
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_PID = 3, 10, 18, 19
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
VETH_PREFIX = "dy"
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port id
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, pad, type, index, flags, change
SIOCETHTOOL = 0x8946
ETHTOOL_GLINK = 0x0A


def veth_name(address: str) -> str:
    """The host end of the veth of the dyno at ``address``: "dy" + the address in hex.

    Named by address, not by dyno: an address belongs to one dyno at a time, it is in the
    ledger (so a restarted dynod knows which veths are its live dynos'), and a warm dyno, wired
    before it knows what it will run, already has its final name.
    """
    return VETH_PREFIX + ipaddress.IPv4Address(address).packed.hex()


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _name(name: str) -> bytes:
    data = name.encode()
    if not data or len(data) > 15 or b"\0" in data or b"/" in data:
        raise ValueError(f"bad interface name {name!r}")
    return data + b"\0"


def veth_request(name: str, bridge_index: int, peer: str, peer_pid: int, seq: int = 1) -> bytes:
    """Pure: the RTM_NEWLINK request for the veth ``name`` (on the bridge ``bridge_index``, up)
    whose peer ``peer`` is made in the network namespace of ``peer_pid`` (down)."""
    peer_info = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(peer))
                 + _attr(IFLA_NET_NS_PID, struct.pack("=I", peer_pid)))
    linkinfo = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
    body = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, _name(name))
            + _attr(IFLA_MASTER, struct.pack("=I", bridge_index)) + _attr(IFLA_LINKINFO, linkinfo))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return _HEADER.pack(_HEADER.size + len(body), RTM_NEWLINK, flags, seq, 0) + body


def ack_error(reply: bytes, seq: int = 1) -> int:
    """Pure: the errno of the kernel's answer to request ``seq`` (0: done)."""
    if len(reply) < _HEADER.size + 4:
        raise OSError(0, "a short netlink answer")
    _length, kind, _flags, got, _port = _HEADER.unpack_from(reply)
    if kind != NLMSG_ERROR or got != seq:
        raise OSError(0, f"an unexpected netlink answer (type {kind}, seq {got})")
    return -struct.unpack_from("=i", reply, _HEADER.size)[0]


def make_veth(name: str, bridge: str, peer: str, peer_pid: int) -> None:
    """Make the pair and isolate its bridge port; OSError if the kernel refused any of it (a
    link made before the refusal stays: dynod's own wiring replaces a leftover of ours)."""
    request = veth_request(name, socket.if_nametoindex(bridge), peer, peer_pid)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
        sock.sendto(request, (0, 0))
        error = ack_error(sock.recv(65536))
    if error:
        raise OSError(error, f"making veth {name}: {os.strerror(error)}")
    # An isolated bridge port talks to the host (the router) but never to another isolated port
    # (net.py); the peer stays down until the dyno, told to go, brings it up.
    with open(f"/sys/class/net/{name}/brport/isolated", "w") as f:
        f.write("1")


def settle_carrier(*links: str) -> None:
    """Have the kernel apply the carrier changes of ``links`` (host-side names) now.

    A dyno's eth0 coming up turns its veth's carrier on, and the bridge's with it if no other
    port had one; the kernel applies such changes (the port to forwarding, the qdisc attached) in
    its linkwatch batch, which can come up to a second later, and drops the packets to and from
    the dyno until then (a lone dyno restarted or woken from sleep, a build; docs/architecture.md).
    Asking a link's state through ethtool makes the kernel run that link's pending change first;
    a kernel that does not only answers. A link already gone is no concern of ours.
    """
    query = array.array("B", struct.pack("=II", ETHTOOL_GLINK, 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        for name in links:  # the veth first: its port turning on is what turns the bridge's on
            try:
                fcntl.ioctl(sock, SIOCETHTOOL, struct.pack("16sP16x", _name(name)[:-1], query.buffer_info()[0]))
            except (OSError, ValueError):
                pass
