"""The host firewall dynod owns: one nftables table per dynod instance, for its dynos and builds.

Without it, a dyno (or a build running an app's setup.py) reaches every host service bound to
0.0.0.0 or to the bridge address, and with IPv4 forwarding on, anything the host can route to.
The table allows a dyno or build only what dynod offers it:

- the host itself: nothing but replies to connections the host made (the router's, the boot
  probe's) and the ports dynod offers (``HostPort``: DNS if dynod provides it, an add-on's port
  later; none today);
- other dynos, other dynods' dynos, builds: nothing (anything into 198.18.0.0/15 is dropped,
  and nothing new is forwarded into dynod's bridges, from the LAN either);
- the outside world: yes, through NAT (masquerade) from the dyno and build subnets.

Its name carries the dyno bridge's name, unique per dynod on a host (the tests run several at
once), and ``remove`` deletes it when dynod stops for good. libnftables' JSON API (Debian's
python3-nftables) applies the whole table in one transaction: a half-made firewall never exists.
``ruleset`` is pure and unit-tested; ``Firewall`` only hands its output to the library.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import UserError

FAMILY = "inet"  # one table for IPv4 and IPv6: dynos have no IPv6, so IPv6 from them is dropped
TABLE_PREFIX = "dynod_"
BENCHMARK_RANGE = "198.18.0.0/15"  # where every dynod's dyno and build subnets live (RFC 2544)
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


@dataclass(frozen=True, slots=True)
class HostPort:
    """A port on the host that dynos may reach at their gateway address (the seam for add-ons)."""

    protocol: str  # "tcp" or "udp"
    port: int
    # Only from the addresses admitted to it (``Firewall.admit_exactly``): an add-on's port is
    # for the dynos of the apps it is attached to, not for every dyno.
    only: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "udp") or not 0 < self.port < 65536:
            raise ValueError(f"not a host port to offer: {self.protocol}/{self.port}")

    @property
    def set_name(self) -> str:
        return f"offer_{self.protocol}_{self.port}"


@dataclass(frozen=True)
class FirewallSpec:
    bridges: tuple[str, ...]  # the dyno bridge, then the build bridge
    subnets: tuple[str, ...]  # their subnets, same order
    offered: tuple[HostPort, ...] = field(default_factory=tuple)
    # The addresses admitted to each ``only`` port (by set name), so a remade table keeps them.
    admitted: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)

    @property
    def table(self) -> str:
        return table_name(self.bridges[0])


def table_name(bridge: str) -> str:
    return TABLE_PREFIX + bridge


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def _prefix(network: str) -> dict[str, Any]:
    net = ipaddress.ip_network(network)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def ruleset(spec: FirewallSpec) -> dict[str, Any]:
    """Pure: the libnftables JSON that (re)creates dynod's table in one transaction."""
    t = spec.table
    bridges = {"set": list(spec.bridges)}
    from_bridges = _match(_meta("iifname"), bridges)
    to_bridges = _match(_meta("oifname"), bridges)
    replies = _match({"ct": {"key": "state"}}, {"set": ["established", "related"]}, "in")
    # Only new connections are refused: a packet conntrack calls "invalid" (a late retransmit, a
    # reset after the entry closed) belongs to a connection that already exists or existed, and
    # dropping it can stall a live one (a router request until H12); the receiving TCP stack
    # answers it as it would without a firewall. Nothing can be opened with it.
    opening = _match({"ct": {"key": "state"}}, {"set": ["new", "untracked"]}, "in")

    def chain(name: str, kind: str, hook: str, prio: int) -> dict[str, Any]:
        return {"add": {"chain": {"family": FAMILY, "table": t, "name": name, "type": kind, "hook": hook,
                                  "prio": prio, "policy": "accept"}}}

    def rule(chain_name: str, *expr: dict[str, Any], comment: str) -> dict[str, Any]:
        return {"add": {"rule": {"family": FAMILY, "table": t, "chain": chain_name, "expr": list(expr),
                                 "comment": comment}}}

    accept, drop = {"accept": None}, {"drop": None}
    counted = {"counter": None}  # `nft list table` then says how much each drop refused
    commands: list[dict[str, Any]] = [
        # add-then-delete makes the delete safe when the table is not there yet: one transaction
        # replaces an old table (a crashed dynod's) or makes the first.
        {"add": {"table": {"family": FAMILY, "name": t}}},
        {"delete": {"table": {"family": FAMILY, "name": t}}},
        {"add": {"table": {"family": FAMILY, "name": t}}},
        chain("input", "filter", "input", -5),
        chain("forward", "filter", "forward", -5),
        chain("postrouting", "nat", "postrouting", 100),
        rule("input", from_bridges, replies, accept, comment="replies to the host's own connections"),
    ]
    admitted = dict(spec.admitted)
    for offered in spec.offered:
        sources: list[dict[str, Any]] = []
        if offered.only:
            commands.append({"add": {"set": {"family": FAMILY, "table": t, "name": offered.set_name,
                                             "type": "ipv4_addr"}}})
            if admitted.get(offered.set_name):
                commands.append(set_elements(t, offered.set_name, admitted[offered.set_name]))
            sources = [_match({"payload": {"protocol": "ip", "field": "saddr"}}, f"@{offered.set_name}")]
        for subnet in spec.subnets:
            gateway = str(next(ipaddress.ip_network(subnet).hosts()))
            commands.append(rule(
                "input", from_bridges, *sources,
                _match({"payload": {"protocol": "ip", "field": "daddr"}}, gateway),
                _match({"payload": {"protocol": offered.protocol, "field": "dport"}}, offered.port), accept,
                comment=f"offered: {offered.protocol}/{offered.port}" + (" (admitted only)" if offered.only else "")))
    commands += [
        rule("input", from_bridges, opening, counted, drop, comment="nothing else of the host's"),
        rule("forward", to_bridges, replies, accept, comment="replies back to dynos and builds"),
        rule("forward", to_bridges, opening, counted, drop, comment="nothing new into a dyno or build"),
        rule("forward", from_bridges, _match({"payload": {"protocol": "ip", "field": "daddr"}},
                                             _prefix(BENCHMARK_RANGE)), counted, drop,
             comment="no dyno or build of any dynod"),
        rule("forward", from_bridges, _match(_meta("nfproto"), "ipv6"), counted, drop, comment="no IPv6"),
        rule("forward", from_bridges, accept, comment="the outside world"),
    ]
    for subnet in spec.subnets:
        commands.append(rule(
            "postrouting", _match({"payload": {"protocol": "ip", "field": "saddr"}}, _prefix(subnet)),
            _match(_meta("oifname"), bridges, "!="), {"masquerade": None}, comment="egress through NAT"))
    return {"nftables": commands}


def set_elements(table: str, name: str, addresses: tuple[str, ...]) -> dict[str, Any]:
    return {"add": {"element": {"family": FAMILY, "table": table, "name": name, "elem": sorted(addresses)}}}


def admit_commands(spec: FirewallSpec, admitted: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """Pure: replace the members of each named set in one transaction (flush, then add)."""
    commands: list[dict[str, Any]] = []
    for name, addresses in sorted(admitted.items()):
        commands.append({"flush": {"set": {"family": FAMILY, "table": spec.table, "name": name}}})
        if addresses:
            commands.append(set_elements(spec.table, name, addresses))
    return {"nftables": commands}


class Firewall:
    """dynod's table in the host's nftables (root only; every call is a few ms, off trio's thread)."""

    def __init__(self, spec: FirewallSpec) -> None:
        self.spec = spec

    def _nft(self):  # type: ignore[no-untyped-def]
        try:
            import nftables
        except ImportError:
            raise UserError("The nftables Python module is missing: apt-get install python3-nftables and "
                            "re-run ./install.sh (it links the module into dynod's venv).") from None
        nft = nftables.Nftables()
        nft.set_json_output(True)
        nft.set_handle_output(False)
        return nft

    def apply(self) -> None:
        """Make (or remake) the table, then turn IPv4 forwarding on for the egress it allows.

        Forwarding is host-wide (as with Docker) and left on at removal: another dynod on the host
        may rely on it. The table is in place first, so nothing is forwarded unfiltered.
        """
        rc, _out, err = self._nft().json_cmd(ruleset(self.spec))
        if rc != 0:
            raise UserError(f"nftables refused dynod's table {self.spec.table}: {str(err).strip()}")
        with open(IP_FORWARD) as f:
            if f.read().strip() != "1":
                with open(IP_FORWARD, "w") as w:
                    w.write("1")

    def offer(self, port: HostPort) -> None:
        """Let dynos and builds reach ``port`` on the host at their gateway address (an add-on's
        server, a DNS forwarder): the table is remade with it, in one transaction."""
        if port not in self.spec.offered:
            self.spec = replace(self.spec, offered=(*self.spec.offered, port))
            self.apply()

    def admit_exactly(self, wanted: dict[HostPort, set[str]]) -> None:
        """Make the ``only`` ports offered exactly those of ``wanted``, each admitting exactly its
        addresses: a new or withdrawn port remakes the table, a change of members alone is one
        small transaction on the sets (about a millisecond: it runs before a dyno may start)."""
        ports = {replace(port, only=True) for port in wanted}
        admitted = {port.set_name: tuple(sorted(wanted[port])) for port in wanted}
        kept = tuple(p for p in self.spec.offered if not p.only)
        current = {p for p in self.spec.offered if p.only}
        if ports != current:
            self.spec = replace(self.spec, offered=(*kept, *sorted(ports, key=lambda p: (p.protocol, p.port))),
                                admitted=tuple(sorted(admitted.items())))
            self.apply()
            return
        changed = {name: members for name, members in admitted.items() if dict(self.spec.admitted).get(name) != members}
        if changed:
            rc, _out, err = self._nft().json_cmd(admit_commands(self.spec, changed))
            if rc != 0:
                raise UserError(f"nftables refused the add-on access sets of {self.spec.table}: {str(err).strip()}")
            self.spec = replace(self.spec, admitted=tuple(sorted(admitted.items())))

    def remove(self) -> None:
        """Delete the table (dynod stops for good); nothing if it is not there."""
        if self.exists():
            rc, _out, err = self._nft().json_cmd(
                {"nftables": [{"delete": {"table": {"family": FAMILY, "name": self.spec.table}}}]})
            if rc != 0:
                raise UserError(f"nftables did not delete {self.spec.table}: {str(err).strip()}")

    def exists(self) -> bool:
        return self.spec.table in list_tables(self._nft())


def list_tables(nft: Any = None) -> list[str]:
    """Names of the inet tables on the host (the tests' leftover check uses it too)."""
    if nft is None:
        import nftables

        nft = nftables.Nftables()
        nft.set_json_output(True)
    rc, out, err = nft.cmd("list tables")
    if rc != 0:
        raise UserError(f"nftables could not list tables: {str(err).strip()}")
    import json

    return [item["table"]["name"] for item in json.loads(out)["nftables"]
            if "table" in item and item["table"].get("family") == FAMILY]
