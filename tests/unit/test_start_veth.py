"""The spawner's veth request, packed by hand, read back by pyroute2's own parser (the library
dynod's other netlink calls use): the same pair dynod.linux.net asks for."""

from __future__ import annotations

import struct

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from dynod.linux.veth import IFF_UP, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, ack_error, veth_request


def test_the_request_is_one_veth_on_the_bridge_with_its_peer_in_the_dynos_namespace() -> None:
    data = veth_request("dyc6130105", 7, "eth0", 4242, seq=9)
    msg = ifinfmsg(data)
    msg.decode()
    assert msg["header"]["length"] == len(data) and msg["header"]["type"] == 16  # RTM_NEWLINK
    assert msg["header"]["flags"] == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL  # never replaces a link
    assert msg["header"]["sequence_number"] == 9
    assert (msg["flags"], msg["change"]) == (IFF_UP, IFF_UP)  # the host end up at once
    assert (msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_MASTER")) == ("dyc6130105", 7)
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert (peer.get_attr("IFLA_IFNAME"), peer.get_attr("IFLA_NET_NS_PID")) == ("eth0", 4242)
    assert peer["flags"] == 0  # the peer down: the dyno brings it up after go


@pytest.mark.parametrize("name", ["", "a" * 16, "a/b", "a\0b"])
def test_a_name_the_kernel_would_refuse_is_refused_before_sending(name: str) -> None:
    with pytest.raises(ValueError, match="bad interface name"):
        veth_request(name, 7, "eth0", 1)


def test_the_kernels_answer_is_its_errno_or_zero() -> None:
    def answer(error: int, seq: int = 1, kind: int = 2) -> bytes:
        return struct.pack("=IHHIIi", 20, kind, 0, seq, 0, error)

    assert ack_error(answer(0)) == 0
    assert ack_error(answer(-17)) == 17  # EEXIST: dynod's own wiring takes it from there
    with pytest.raises(OSError, match="unexpected"):
        ack_error(answer(0, seq=2))
    with pytest.raises(OSError, match="unexpected"):
        ack_error(answer(0, kind=16))
    with pytest.raises(OSError, match="short"):
        ack_error(b"\0" * 8)
