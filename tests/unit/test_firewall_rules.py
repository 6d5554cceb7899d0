"""dynod's nftables table as data (pure), and the build network's settings."""

from __future__ import annotations

import json

import pytest

from dynod.errors import UserError
from dynod.linux.firewall import FirewallSpec, HostPort, ruleset, table_name
from dynod.settings import NetworkSettings, Settings, validate

SPEC = FirewallSpec(("dynod0", "dynod0b"), ("198.18.0.0/16", "198.19.255.0/24"))


def rules(spec: FirewallSpec = SPEC) -> list[dict]:
    return [c["add"]["rule"] for c in ruleset(spec)["nftables"] if "rule" in c.get("add", {})]


def verdict(rule: dict) -> str:
    return next(k for e in rule["expr"] for k in e if k in ("accept", "drop", "masquerade"))


def test_the_table_is_named_after_the_dyno_bridge_so_each_dynod_has_its_own() -> None:
    assert SPEC.table == table_name("dynod0") == "dynod_dynod0"
    commands = ruleset(SPEC)["nftables"]
    # add, delete, add: one transaction replaces a leftover table or makes the first
    assert [next(iter(c)) for c in commands[:3]] == ["add", "delete", "add"]
    assert all(c[next(iter(c))].get("table", {}).get("name", SPEC.table) == SPEC.table for c in commands[:3])


def test_the_host_takes_only_replies_and_offered_ports_from_dynos_and_builds() -> None:
    input_rules = [r for r in rules() if r["chain"] == "input"]
    assert [verdict(r) for r in input_rules] == ["accept", "drop"]
    assert "established" in json.dumps(input_rules[0]) and "dynod0b" in json.dumps(input_rules[0])
    # the drop is of new connections only: a late packet of a live one must not stall it
    assert '"new"' in json.dumps(input_rules[-1]) and '"invalid"' not in json.dumps(input_rules[-1])
    offered = rules(FirewallSpec(SPEC.bridges, SPEC.subnets, (HostPort("udp", 53),)))
    dns = [r for r in offered if r["chain"] == "input" and '"dport"' in json.dumps(r)]
    assert len(dns) == 2  # at each bridge's gateway address, before the drop
    assert '"198.18.0.1"' in json.dumps(dns[0]) and '"198.19.255.1"' in json.dumps(dns[1])
    assert [verdict(r) for r in offered if r["chain"] == "input"] == ["accept", "accept", "accept", "drop"]


def test_forwarding_lets_out_to_the_world_but_never_into_a_dyno_or_another_dynod() -> None:
    forward = [r for r in rules() if r["chain"] == "forward"]
    assert [verdict(r) for r in forward] == ["accept", "drop", "drop", "drop", "accept"]
    assert "198.18.0.0" in json.dumps(forward[2]) and '"len": 15' in json.dumps(forward[2])
    assert forward[0]["expr"][0]["match"]["left"] == {"meta": {"key": "oifname"}}  # replies in, nothing new


def test_both_subnets_are_masqueraded_on_the_way_out() -> None:
    nat = [r for r in rules() if r["chain"] == "postrouting"]
    assert [verdict(r) for r in nat] == ["masquerade", "masquerade"]
    assert {"198.18.0.0", "198.19.255.0"} == {r["expr"][0]["match"]["right"]["prefix"]["addr"] for r in nat}


def test_a_bad_offered_port_is_refused() -> None:
    with pytest.raises(ValueError):
        HostPort("sctp", 5432)
    with pytest.raises(ValueError):
        HostPort("tcp", 0)


def test_the_build_subnet_must_be_apart_from_the_dyno_subnet() -> None:
    with pytest.raises(UserError, match="apart from the dyno subnet"):
        validate(Settings(network=NetworkSettings(subnet="198.18.0.0/16", build_subnet="198.18.9.0/24")))
    with pytest.raises(UserError, match="build_subnet"):
        validate(Settings(network=NetworkSettings(build_subnet="nonsense")))
    assert validate(Settings()).network.build_bridge_name == "dynod0b"
