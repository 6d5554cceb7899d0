"""A dyno's veth as the start path wires it: one request makes the pair with its host end on the
bridge, up and isolated, and its peer born as eth0 in the dyno's network namespace."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from dynod.errors import UserError
from dynod.linux import netconf
from dynod.linux import syscalls as sc
from dynod.linux.net import DYNO_IFNAME, Network, veth_name
from dynod.linux.veth import settle_carrier

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


def _forwarding(port: str, bridge: str) -> bool:
    sysfs = Path("/sys/class/net")
    return ((sysfs / port / "brport" / "state").read_text().strip() == "3"  # BR_STATE_FORWARDING
            and (sysfs / bridge / "operstate").read_text().strip() == "up")


def _configure_inside(netns: str, address: str, gateway: str) -> None:
    """What a dyno's init does (netconf.configure), from this thread entered into ``netns``."""
    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    inside = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        sc.setns(inside, sc.CLONE_NEWNET)
        try:
            netconf.configure(DYNO_IFNAME, address, 24, gateway)
        finally:
            sc.setns(host, sc.CLONE_NEWNET)
    finally:
        os.close(inside)
        os.close(host)


def test_a_settled_port_forwards_as_soon_as_the_dyno_brings_eth0_up() -> None:
    # Lone dynos replaced one after another, as a one-dyno app restarts (the first on a bridge
    # just made, as dynod's first dyno): the bridge loses its carrier with each and gets it back
    # with the next, and the kernel's linkwatch can leave those changes (the port's, the
    # bridge's) for its next batch, up to a second later, dropping the dyno's packets meanwhile.
    # With the settle made a no-op this fails in its first round, every time on this host.
    token = secrets.token_hex(2)
    bridge, netns = f"dyt{token}", f"dyt{token}"
    subnet = f"198.19.{free_third_octet()}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        for round_ in range(20):
            address = f"{subnet}.{round_ + 2}"
            port = veth_name(address)
            subprocess.run(["ip", "netns", "add", netns], check=True)
            try:
                subprocess.run(["ip", "link", "add", port, "master", bridge, "up", "type", "veth",
                                "peer", "name", DYNO_IFNAME, "netns", netns], check=True)
                _configure_inside(netns, address, f"{subnet}.1")
                settle_carrier(port, bridge)
                assert _forwarding(port, bridge), f"round {round_}"
            finally:
                subprocess.run(["ip", "netns", "del", netns], check=True)
            time.sleep(0.2)
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=True)
    assert f"dyt{token}" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


async def test_a_subnet_another_link_routes_is_refused_with_nothing_made() -> None:
    # Two dynods on one host with the same build_subnet (the default) made two bridges routing
    # it; the second one's builds got no DNS answer back and failed after pip's ~70 s of retries.
    token = secrets.token_hex(2)
    subnet = f"198.19.{free_third_octet()}.0/24"
    first, second = Network(f"dyt{token}", subnet), Network(f"dyu{token}", subnet)
    try:
        await first.ensure_bridge()
        await first.check_subnet()  # its own bridge is no other link
        for attempt in (second.check_subnet, second.ensure_bridge):
            with pytest.raises(UserError, match=rf"{subnet} \(for bridge dyu{token}\) is already routed on "
                                                rf"dyt{token}.*give each its own \[network\] subnet and build_subnet"):
                await attempt()
        assert not (Path("/sys/class/net") / f"dyu{token}").exists()
    finally:
        for network in (second, first):
            await network.teardown()
            network.close()
