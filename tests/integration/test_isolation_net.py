"""Network isolation of dynos and builds (issue 9 items 2 and 3), through a real dynod.

The attacks: code in an app (a dyno, or a build's bin/post_compile as an in-app buildpack hook or
a setup.py would be) connects to host services bound to 0.0.0.0 and to loopback, to another app's
dyno directly (bypassing the router), and binds ports on the host. Each must fail, while the
outside world stays reachable through NAT. "The outside world" here is a network namespace the
test makes, on a documentation-range address (198.51.100.0/24): tests send no traffic off host.
The build-time attacker is an npm postinstall script (app code any build runs).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration

# Tries each target and prints one JSON line: {name: "ok:<reply>" | "refused" | "timeout" | error}.
PROBE = r'''
import json, socket, sys
results = {}
for name, host, port in json.loads(sys.argv[1]):
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            results[name] = "ok:" + s.recv(100).decode()
    except ConnectionRefusedError:
        results[name] = "refused"
    except (socket.timeout, TimeoutError):
        results[name] = "timeout"
    except OSError as exc:
        results[name] = type(exc).__name__ + ":" + str(exc.errno)
print("PROBE " + json.dumps(results), flush=True)
'''


class HostService:
    """A TCP server on the host that answers every connection with ``tag`` and the peer address."""

    def __init__(self, address: str, tag: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.tag = tag
        self.peers: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer[0])
            with conn:
                conn.sendall(f"{self.tag}@{peer[0]}".encode())

    def close(self) -> None:
        self.sock.close()


@dataclass
class Outside:
    """A stand-in for the internet: a namespace behind a veth, reached only by routing and NAT."""

    netns: str
    host_address: str
    address: str
    port: int
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    token = secrets.token_hex(3)
    netns, veth = f"out{token}", f"vo{token}"
    block = int(token, 16) % 60 * 4  # a /30 of 198.51.100.0/24 of its own
    host_address, address = f"198.51.100.{block + 1}", f"198.51.100.{block + 2}"
    commands = [
        ["ip", "netns", "add", netns],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns],
        ["ip", "addr", "add", f"{host_address}/30", "dev", veth],
        ["ip", "link", "set", veth, "up"],
        ["ip", "-n", netns, "addr", "add", f"{address}/30", "dev", "eth0"],
        ["ip", "-n", netns, "link", "set", "eth0", "up"],
        ["ip", "-n", netns, "link", "set", "lo", "up"],
    ]
    proc = None
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        server = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  f"s.bind(('{address}', 8099)); s.listen(16); print('ready', flush=True)\n"
                  "while True:\n c, p = s.accept(); c.sendall(('outside@' + p[0]).encode()); c.close()\n")
        proc = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", server], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield Outside(netns, host_address, address, 8099, proc)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


@pytest.fixture(scope="module")
def host_services(dynod: Dynod) -> Iterator[dict[str, HostService]]:
    services = {"any": HostService("0.0.0.0", "host-any"), "loopback": HostService("127.0.0.1", "host-loopback")}
    yield services
    for service in services.values():
        service.close()


def host_address() -> str:
    """The host's own address on its uplink (not loopback, not a bridge of a dynod)."""
    out = subprocess.run(["ip", "-4", "-o", "route", "get", "198.51.100.250"], capture_output=True,
                         text=True).stdout
    # Without a default route there is no uplink to pretend with; the bridge address is tested anyway.
    return out.split(" src ")[1].split()[0] if " src " in out else "127.0.0.1"


def gateway(subnet: str) -> str:
    import ipaddress

    return str(next(ipaddress.ip_network(subnet).hosts()))


def build_subnet(d: Dynod) -> str:
    return d.config.read_text().split('build_subnet = "')[1].split('"')[0]


def dyno_ip(d: Dynod, app: str, name: str) -> str:
    db = sqlite3.connect(d.root / "state" / "dynod.sqlite3")
    try:
        row = db.execute("SELECT ip FROM dynos WHERE id LIKE ?", (f"{app}.{name}.%",)).fetchone()
    finally:
        db.close()
    assert row is not None and row[0], f"no address for {app} {name}"
    return row[0]


def parse_probe(output: str) -> dict[str, str]:
    for line in output.splitlines():
        if "PROBE " in line:
            return json.loads(line.split("PROBE ", 1)[1])
    raise AssertionError(f"no probe output in:\n{output}")


@pytest.fixture(scope="module")
def victim(dynod: Dynod, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another app's web dyno, the one an attacker would like to reach behind the router's back."""
    name = f"t{secrets.token_hex(4)}"
    dynod.ctl("apps:create", name)
    dynod.ctl("deploy", str(write_app(tmp_path_factory.mktemp("victim"), "web: python3 web.py\n")), "-a", name)
    dynod.up(name, 1)
    yield name
    dynod.ctl("apps:destroy", "-a", name, "--confirm", name, check=False)


def targets(d: Dynod, services: dict[str, HostService], outside: Outside, victim: str,
            own_subnet: str) -> list[tuple[str, str, int]]:
    return [
        ("host_any_via_gateway", gateway(own_subnet), services["any"].port),
        ("host_any_via_uplink", host_address(), services["any"].port),
        ("host_any_via_dyno_gateway", gateway(d.subnet), services["any"].port),
        ("host_loopback", "127.0.0.1", services["loopback"].port),
        ("other_app_dyno", dyno_ip(d, victim, "web.1"), 5000),
        ("outside", outside.address, outside.port),
    ]


def node_app(path: Path, script: str, files: dict[str, str] | None = None) -> Path:
    """An app whose npm postinstall runs ``script``: app code at build time, as an attacker's would."""
    package = {"name": "probe", "version": "1.0.0", "scripts": {"postinstall": "sh ./probe.sh"}}
    return write_app(path, "web: python3 web.py\n",
                     {"package.json": json.dumps(package), "probe.sh": script, **(files or {})})


def test_a_build_reaches_the_outside_through_nat_and_nothing_of_the_host_or_dynos(
        dynod: Dynod, app: str, tmp_path: Path, host_services: dict[str, HostService], outside: Outside,
        victim: str) -> None:
    build_net = build_subnet(dynod)
    probe_targets = targets(dynod, host_services, outside, victim, build_net)
    hook = (f"python3 /app/probe.py '{json.dumps(probe_targets)}'\n"
            "echo BUILD-NETNS $(readlink /proc/self/ns/net)\n"
            "grep ^nameserver /etc/resolv.conf | sed 's/^/BUILD-/'\n")
    out = dynod.ctl("deploy", str(node_app(tmp_path / "src", hook, {"probe.py": PROBE})), "-a", app).stdout
    got = parse_probe(out)
    assert got["outside"] == f"ok:outside@{outside.host_address}", got  # egress, masqueraded at the host
    for name in ("host_any_via_gateway", "host_any_via_uplink", "host_any_via_dyno_gateway", "other_app_dyno"):
        assert not got[name].startswith("ok"), (name, got)
    assert got["host_loopback"] == "refused"  # its own loopback: nobody listens there
    assert host_services["any"].peers == [] and host_services["loopback"].peers == []
    assert f"BUILD-NETNS {os.readlink('/proc/self/ns/net')}" not in out  # not the host's namespace
    # DNS: the stack's resolv.conf, the host's resolvers with loopback ones replaced, reached
    # through NAT like any outside server.
    servers = [line.split("BUILD-nameserver", 1)[1].split()[0] for line in out.splitlines()
               if "BUILD-nameserver" in line]
    assert servers and not any(s.startswith("127.") or s == "::1" for s in servers), out
    # The victim still serves through the router (only the direct path is closed).
    assert _fetch(dynod, victim) == "web.1 hello\n"


def test_a_dyno_reaches_no_host_service_and_no_other_dyno(dynod: Dynod, app: str, tmp_path: Path,
                                                          host_services: dict[str, HostService],
                                                          outside: Outside, victim: str) -> None:
    dynod.ctl("deploy", str(write_app(tmp_path / "src", "web: python3 web.py\n", {"probe.py": PROBE})), "-a", app)
    probe_targets = targets(dynod, host_services, outside, victim, dynod.subnet)
    result = dynod.ctl("run", "-a", app, "--", "python3", "/app/probe.py", json.dumps(probe_targets), timeout=90)
    got = parse_probe(result.stdout)
    for name in ("host_any_via_gateway", "host_any_via_uplink", "other_app_dyno"):
        assert not got[name].startswith("ok"), (name, got)
    assert got["host_loopback"] == "refused"
    assert got["outside"] == f"ok:outside@{outside.host_address}", got
    assert host_services["any"].peers == []


def test_a_build_cannot_listen_on_the_host(dynod: Dynod, app: str, tmp_path: Path) -> None:
    port = _free_port()
    hook = (f"python3 -c \"import socket,time; s=socket.socket(); s.bind(('0.0.0.0', {port})); s.listen(); "
            "print('BUILD-BOUND', flush=True); time.sleep(3)\" &\n"
            "sleep 1.5; echo BUILD-DONE; wait\n")
    src = node_app(tmp_path / "src", hook)
    found: list[bool] = []

    def watch() -> None:  # while the build holds its port, is it on the host?
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not found:
            listening = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True).stdout
            if listening.strip():
                found.append(True)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out = dynod.ctl("deploy", str(src), "-a", app).stdout
    found.append(False)
    watcher.join()
    assert "BUILD-BOUND" in out and "BUILD-DONE" in out
    assert found[0] is False, "the build's listening socket showed up on the host"


def test_the_firewall_table_is_per_dynod_and_removed_when_dynod_stops_for_good() -> None:
    with running_dynod() as d:
        tables = _tables()
        assert f"dynod_{d.bridge}" in tables
        rules = subprocess.run(["nft", "list", "table", "inet", f"dynod_{d.bridge}"], capture_output=True,
                               text=True).stdout
        assert d.bridge in rules and f"{d.bridge}b" in rules and "masquerade" in rules
    assert f"dynod_{d.bridge}" not in _tables()  # (the leftover check said so too)


def _tables() -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [line.split()[-1] for line in out.splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(d: Dynod, app: str) -> str:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{d.http_port}/", headers={"Host": f"{app}.localhost"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def test_offering_a_host_port_adds_one_accept_before_the_drop() -> None:
    """The seam for add-ons: "let this dynod's dynos reach host port P" remakes the table with it."""
    from dynod.linux.firewall import Firewall, FirewallSpec, HostPort

    token = secrets.token_hex(3)
    firewall = Firewall(FirewallSpec((f"dyo{token}", f"dyo{token}b"), ("198.19.252.0/25", "198.19.252.128/25")))
    try:
        firewall.apply()
        firewall.offer(HostPort("tcp", 5432))
        listing = subprocess.run(["nft", "list", "table", "inet", firewall.spec.table], capture_output=True,
                                 text=True, check=True).stdout
        chain = listing.split("chain input {")[1].split("chain forward")[0]
        assert chain.index("tcp dport 5432 accept") < chain.index("drop")
        assert "ip daddr 198.19.252.1 tcp dport 5432" in chain and "ip daddr 198.19.252.129 tcp dport 5432" in chain
    finally:
        firewall.remove()
    assert not firewall.exists()
