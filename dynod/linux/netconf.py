"""Address a dyno's own interfaces from inside its network namespace, with plain ioctls.

The dyno's PID 1 runs this between the host adding the veth peer and dropping privileges. ioctls
keep it to a few syscalls in the forked child: no netlink library (pyroute2 runs asyncio threads,
which a freshly forked child must not start) and no second process.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCADDRT = 0x890B
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))


def _ifreq(name: str, payload: bytes) -> bytes:
    return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")


class _SockAddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ushort), ("addr", ctypes.c_ubyte * 4),
                ("zero", ctypes.c_ubyte * 8)]


class _RtEntry(ctypes.Structure):
    _fields_ = [
        ("rt_pad1", ctypes.c_ulong), ("rt_dst", _SockAddr), ("rt_gateway", _SockAddr),
        ("rt_genmask", _SockAddr), ("rt_flags", ctypes.c_ushort), ("rt_pad2", ctypes.c_short),
        ("rt_pad3", ctypes.c_ulong), ("rt_pad4", ctypes.c_void_p), ("rt_metric", ctypes.c_short),
        ("rt_dev", ctypes.c_char_p), ("rt_mtu", ctypes.c_ulong), ("rt_window", ctypes.c_ulong),
        ("rt_irtt", ctypes.c_ushort),
    ]


def _addr(address: str) -> _SockAddr:
    sa = _SockAddr()
    sa.family = socket.AF_INET
    sa.addr[:] = list(socket.inet_aton(address))
    return sa


def link_up(sock: socket.socket, name: str) -> None:
    flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, _ifreq(name, b""))[:18])[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, _ifreq(name, struct.pack("H", flags | IFF_UP)))


def configure(ifname: str | None, address: str | None = None, prefix: int = 24,
              gateway: str | None = None) -> None:
    """lo up; then, if given, ``ifname`` addressed, up, and the default route via ``gateway``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        link_up(sock, "lo")
        if ifname is None or address is None:
            return
        netmask = str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)
        fcntl.ioctl(sock, SIOCSIFADDR, _ifreq(ifname, _sockaddr_in(address)))
        fcntl.ioctl(sock, SIOCSIFNETMASK, _ifreq(ifname, _sockaddr_in(netmask)))
        link_up(sock, ifname)
        if gateway:
            route = _RtEntry()
            route.rt_dst = _addr("0.0.0.0")
            route.rt_genmask = _addr("0.0.0.0")
            route.rt_gateway = _addr(gateway)
            route.rt_flags = RTF_UP | RTF_GATEWAY
            route.rt_dev = ifname.encode()
            fcntl.ioctl(sock, SIOCADDRT, bytes(route))
