"""A dyno's veth as the start path wires it: one request makes the pair with its host end on the
bridge, up and isolated, and its peer born as eth0 in the dyno's network namespace."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from dynod.linux.net import DYNO_IFNAME, Network, veth_name

from .conftest import free_third_octet

pytestmark = pytest.mark.integration


def _netns_holder() -> subprocess.Popen[bytes]:
    """A process in a network namespace of its own (as a forked dyno is), until killed."""
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", "echo ready; exec sleep 60"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def _links_in(pid: int) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link"], capture_output=True,
                          text=True, check=True).stdout


async def test_attach_puts_an_isolated_up_port_on_the_bridge_and_eth0_in_the_dyno() -> None:
    token = secrets.token_hex(2)
    network = Network(f"dyt{token}", f"198.19.{free_third_octet()}.0/24")
    holders: list[subprocess.Popen[bytes]] = []
    try:
        await network.ensure_bridge()
        for _ in range(2):  # the second on a bridge the first already hangs on
            holder = _netns_holder()
            holders.append(holder)
            address = network.pool.allocate()
            name = await network.attach(address, holder.pid)
            assert name == veth_name(address)
            port = Path("/sys/class/net") / name
            assert (port / "master").resolve().name == network.bridge
            assert int((port / "flags").read_text(), 16) & 0x1  # IFF_UP
            assert (port / "brport" / "isolated").read_text().strip() == "1"
            inside = _links_in(holder.pid)
            assert f" {DYNO_IFNAME}@" in inside
            assert "state UP" not in inside.split(f" {DYNO_IFNAME}@")[1].splitlines()[0]  # the dyno brings it up
        # A leftover of an earlier dyno at the same address is replaced, not an error.
        holder = _netns_holder()
        holders.append(holder)
        name = await network.attach(address, holder.pid)
        assert f" {DYNO_IFNAME}@" in _links_in(holder.pid)
        assert f" {DYNO_IFNAME}@" not in _links_in(holders[1].pid)
        assert (Path("/sys/class/net") / name / "brport" / "isolated").read_text().strip() == "1"
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
        await network.teardown()
        network.close()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"dyt{token}" not in links
