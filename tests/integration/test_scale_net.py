"""Pruning after a restart reads the bridge's own list of ports (issue 16: a netlink dump of every
link on the host cost 0.6 s of a restart with 500 dynos), and still touches only this dynod's veths:
those on its bridge whose dyno is gone, never a live dyno's, never a same-named veth elsewhere."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from dynod.linux.net import Network, veth_name

from .conftest import free_third_octet

pytestmark = pytest.mark.integration


def _link(*args: str) -> None:
    subprocess.run(["ip", "link", *args], check=True, capture_output=True)


def _exists(name: str) -> bool:
    return (Path("/sys/class/net") / name).exists()


async def test_prune_deletes_only_the_gone_dynos_veths_on_its_own_bridge() -> None:
    token = secrets.token_hex(2)
    third = free_third_octet()
    network = Network(f"dyt{token}", f"198.19.{third}.0/24")
    other_bridge = f"dyo{token}"
    live, gone, elsewhere = (veth_name(f"198.19.{third}.{host}") for host in (10, 11, 12))
    made = [live, gone, elsewhere]
    try:
        await network.ensure_bridge()
        _link("add", other_bridge, "type", "bridge")
        for name, bridge in ((live, network.bridge), (gone, network.bridge), (elsewhere, other_bridge)):
            _link("add", name, "type", "veth", "peer", "name", f"p{name[2:]}")
            _link("set", name, "master", bridge)
        assert sorted(network._our_veths()) == sorted([live, gone])
        pruned = await network.prune([f"198.19.{third}.10"])
        assert pruned == [gone]
        assert _exists(live) and not _exists(gone) and _exists(elsewhere)
        assert await network.prune([f"198.19.{third}.10"]) == []  # nothing left to do
    finally:
        for name in made:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", other_bridge], capture_output=True)
        await network.teardown()
        network.close()
    assert not _exists(network.bridge) and not _exists(other_bridge)
    assert not any(_exists(name) for name in made)
