"""A cold dyno's veth made by the spawner right after the fork (dynod.linux.veth), against the real
kernel: the same isolated port on the bridge and eth0, down, in the dyno's namespace as dynod's
own wiring makes; and a link of the same name already there is left to dynod, which replaces a
leftover of its own and starts the dyno all the same."""

from __future__ import annotations

import errno
import ipaddress
import secrets
import subprocess
from pathlib import Path

import pytest

from dynod.linux.net import DYNO_IFNAME, Network
from dynod.linux.veth import make_veth, veth_name

from .conftest import free_third_octet, running_dynod, write_app

pytestmark = pytest.mark.integration


def _netns_holder() -> subprocess.Popen[bytes]:
    """A process in a network namespace of its own (as a forked dyno is), until killed."""
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", "echo ready; exec sleep 60"], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def _links_in(pid: int) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link"], capture_output=True,
                          text=True, check=True).stdout


def _assert_wired(name: str, bridge: str, pid: int) -> None:
    port = Path("/sys/class/net") / name
    assert (port / "master").resolve().name == bridge
    assert int((port / "flags").read_text(), 16) & 0x1  # IFF_UP
    assert (port / "brport" / "isolated").read_text().strip() == "1"
    inside = _links_in(pid)
    assert f" {DYNO_IFNAME}@" in inside
    assert "state UP" not in inside.split(f" {DYNO_IFNAME}@")[1].splitlines()[0]  # the dyno brings it up


async def test_the_spawners_veth_is_an_isolated_port_and_a_name_taken_is_refused() -> None:
    network = Network(f"dyv{secrets.token_hex(2)}", f"198.19.{free_third_octet()}.0/24")
    holders: list[subprocess.Popen[bytes]] = []
    try:
        await network.ensure_bridge()
        address = network.pool.allocate()
        name = veth_name(address)
        holders.append(_netns_holder())
        make_veth(name, network.bridge, DYNO_IFNAME, holders[0].pid)
        _assert_wired(name, network.bridge, holders[0].pid)
        # Taken: the kernel says EEXIST and nothing of the first pair changes (NLM_F_EXCL) ...
        holders.append(_netns_holder())
        with pytest.raises(OSError) as refused:
            make_veth(name, network.bridge, DYNO_IFNAME, holders[1].pid)
        assert refused.value.errno == errno.EEXIST
        assert f" {DYNO_IFNAME}@" in _links_in(holders[0].pid) and f" {DYNO_IFNAME}@" not in _links_in(holders[1].pid)
        # ... and dynod's own wiring, which the spawner leaves it to, replaces a leftover of ours.
        await network.attach(address, holders[1].pid)
        _assert_wired(name, network.bridge, holders[1].pid)
        with pytest.raises(OSError):
            make_veth(veth_name(network.pool.allocate()), f"nobr{secrets.token_hex(2)}", DYNO_IFNAME, holders[1].pid)
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
        await network.teardown()
        network.close()


def test_a_dynod_dyno_is_wired_by_its_spawner_or_by_dynod_past_a_leftover(tmp_path: Path) -> None:
    with running_dynod() as d:
        d.ctl("apps:create", "veths")
        procfile = "worker: exec sleep infinity\n"
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", procfile)), "-a", "veths")
        # The address the dyno will get (the pool's first after the bridge's) already has a link of
        # its name on the bridge, as a dyno's left over from a crash would.
        first = str(next(ipaddress.IPv4Network(d.subnet).hosts()) + 1)
        leftover = veth_name(first)
        subprocess.run(["ip", "link", "add", leftover, "master", d.bridge, "type", "veth", "peer", "name",
                        f"lo{secrets.token_hex(3)}"], check=True)
        spawner_log = d.root / "run" / "spawner.log"
        d.ctl("ps:scale", "worker=1", "-a", "veths")
        d.up("veths", 1, type="worker")
        assert "the veth of veths.worker.1." in spawner_log.read_text()  # refused: EEXIST
        port = Path("/sys/class/net") / leftover
        assert (port / "brport" / "isolated").read_text().strip() == "1"  # dynod's own wiring replaced it
        # The next one is the spawner's own, with nothing to replace.
        d.ctl("ps:scale", "worker=2", "-a", "veths")
        d.up("veths", 2, type="worker")
        second = veth_name(str(ipaddress.IPv4Address(first) + 1))
        assert (Path("/sys/class/net") / second / "brport" / "isolated").read_text().strip() == "1"
        assert (Path("/sys/class/net") / second / "master").resolve().name == d.bridge
        assert spawner_log.read_text().count("is left to dynod") == 1
