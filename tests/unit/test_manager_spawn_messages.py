"""The spawner's messages: every request and reply survives its own encode and decode, the JSON
is the wire format a running (older) spawner already speaks, and bad messages are refused."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from dynod.linux import spawn_messages as m
from dynod.linux.dyno_exec import ExecSpec
from dynod.linux.dyno_init import Bind, DynoSpec, PreparedNet

SPEC = DynoSpec(id="app.web.1.abc123", hostname="h", argv=["/usr/bin/tini", "--", "bash"], env={"PORT": "5000"},
                lower=["/slug", "/stack"], mnt="/run/mnt", cgroup_procs=[], uid=61001, gid=61001,
                net={"ifname": "eth0", "address": "198.18.0.5", "prefix": 16, "gateway": "198.18.0.1"},
                binds=[Bind("/b", "/app", True)], idmap={"uid": [[0, 1, 2]], "gid": [[0, 1, 2]]})
EXEC = ExecSpec(id="app.web.1.abc123.exec.1", dyno="app.web.1.abc123", argv=["/bin/bash"], cgroup_procs=["/c"],
                stdio="tty", env={"TERM": "xterm"})

REQUESTS: list[m.Request] = [m.Spawn(SPEC), m.Exec(EXEC), m.Assign("warm.1", SPEC), m.ClearKeyrings(61001, 61001),
                             m.Kill("d", 15), m.Prefork("warm.1"), m.Prefork("warm.2", "/run/mnt", 1024), m.Go("d"),
                             m.Prefork("warm.3", "/run/mnt", 1024, PreparedNet("eth0", "198.18.0.7", 16, "198.18.0.1")),
                             m.Prefork("warm.4", net=PreparedNet("eth0", "198.18.0.8", 24)), m.Wired("warm.3"),
                             m.Abort("d"), m.Forget("d"), m.Hello(), m.Shutdown(True)]
REPLIES: list[m.Reply] = [m.Spawned("d", 42, ("stdout", "stderr")), m.Spawned("d", 42, ("stdout",), wired=True),
                          m.Preforked("warm.1", 7), m.Cleared("keyrings.1"),
                          m.Refused("d", "dyno d exists"), m.Refused(None, "not JSON"), m.Started("d", 42),
                          m.Exited("d", 42, 137, ""), m.Exited("d", 42, None, "mount: EPERM"),
                          m.DynoReport("d", 42, ("stdout",), None, "", True, 1.5), m.HelloDone(99)]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r.op)
def test_every_request_round_trips_through_json(request_: m.Request) -> None:
    wire = json.loads(json.dumps(request_.to_json()))
    assert m.decode_request(wire) == request_
    assert wire["op"] == request_.op


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: r.op)
def test_every_reply_round_trips_through_json(reply: m.Reply) -> None:
    assert m.decode_reply(json.loads(json.dumps(reply.to_json()))) == reply


def test_the_wire_format_is_the_one_spawners_already_speak() -> None:
    # What dynod sent before the messages were typed; a spawner started by an older dynod reads it.
    assert m.Kill("d", 9).to_json() == {"op": "kill", "id": "d", "signal": 9}
    assert m.Assign("warm.1", SPEC).to_json()["id"] == "warm.1"
    assert m.ClearKeyrings(61001, 61002).to_json() == {"op": "clear_keyrings", "id": "keyrings.61001",
                                                        "uid": 61001, "gid": 61002}
    spec = m.Spawn(SPEC).to_json()["spec"]
    assert spec["binds"] == [{"source": "/b", "target": "/app", "writable": True}]
    assert DynoSpec.from_json(spec) == SPEC  # what the spawner (and a warm child) decode
    # ... and what older spawners answer decodes into the typed replies.
    assert m.decode_reply({"op": "exited", "id": "d", "pid": 3, "status": 0, "error": ""}) == m.Exited("d", 3, 0)
    assert m.decode_reply({"op": "dyno", "id": "d", "pid": 3, "kinds": ["stdout"], "status": None, "error": "",
                           "started": False, "spawned_at": 2}) == m.DynoReport("d", 3, ("stdout",), spawned_at=2.0)
    assert m.decode_reply({"op": "error", "message": "2 dynos still run"}) == m.Refused(None, "2 dynos still run")
    # A prefork without a net is what older spawners read; one with a net only adds "net", which
    # they ignore (their warm child addresses its interface after its spec, as before), and they
    # refuse "wired" under the warm dyno's id, which nobody waits on.
    assert m.Prefork("warm.1", "/run/mnt", 64).to_json() == {"op": "prefork", "id": "warm.1", "mnt": "/run/mnt",
                                                             "tmpfs_mb": 64}
    assert m.Prefork("w", net=PreparedNet("eth0", "198.18.0.7", 16, None)).to_json()["net"] == {
        "ifname": "eth0", "address": "198.18.0.7", "prefix": 16, "gateway": None}
    assert m.request_id(m.Wired("warm.1").to_json()) == "warm.1"
    # An older spawner never says "wired": dynod then makes the veth itself.
    assert m.decode_reply({"op": "spawned", "id": "d", "pid": 3, "kinds": []}) == m.Spawned("d", 3)
    assert "wired" not in m.Spawned("d", 3).to_json()


def test_a_one_off_with_pipes_is_assigned_with_an_op_older_spawners_refuse() -> None:
    pipes = replace(SPEC, stdio="pipes")
    wire = json.loads(json.dumps(m.Assign("warm.1", pipes).to_json()))
    assert wire["op"] == "assign_pipes" and m.decode_request(wire) == m.Assign("warm.1", pipes)
    assert m.Assign("warm.1", SPEC).to_json()["op"] == "assign"  # a dyno that logs: as before
    # A spawner from before warm dynos had a stdin pipe answers an unknown op with a refusal under
    # the id it can find, the spec's: the one dynod waits on, so the start goes cold at once.
    assert m.request_id(wire) == pipes.id


@pytest.mark.parametrize(("data", "error"), [
    ([], "a message is a JSON object"),
    ({"op": "format_disk"}, "unknown request 'format_disk'"),
    ({"op": "go"}, "'go': id must be a string"),
    ({"op": "kill", "id": "d", "signal": "9"}, "'kill': signal must be an integer"),
    ({"op": "kill", "id": "d", "signal": True}, "'kill': signal must be an integer"),
    ({"op": "spawn", "spec": "x"}, "'spawn': spec must be an object"),
    ({"op": "spawn", "spec": {"id": "d", "evil": 1}}, "'spawn': bad dyno spec"),
    ({"op": "spawn", "spec": {**m.dyno_spec_json(SPEC), "binds": ["x"]}}, "'spawn': bad dyno spec"),
    ({"op": "exec", "spec": {**json.loads(json.dumps(m.Exec(EXEC).to_json()))["spec"], "stdio": "log"}},
     "'exec': bad exec spec"),
    ({"op": "clear_keyrings", "uid": "0", "gid": 0}, "uid must be an integer"),
    ({"op": "prefork", "id": "w", "net": "eth0"}, "'prefork': net must be an object"),
    ({"op": "prefork", "id": "w", "net": {"ifname": "eth0", "address": "198.18.0.7"}},
     "'prefork net': prefix must be an integer"),
    ({"op": "prefork", "id": "w", "net": {"ifname": "eth0", "address": "198.18.0.7", "prefix": 24, "gateway": 1}},
     "'prefork net': gateway must be a string"),
])
def test_bad_requests_are_refused_in_one_line(data: object, error: str) -> None:
    with pytest.raises(m.MessageError, match=error) as caught:
        m.decode_request(data)
    assert "\n" not in str(caught.value)


def test_an_error_reply_names_the_request_it_refuses() -> None:
    assert m.request_id({"op": "spawn", "spec": {"id": "d1"}}) == "d1"
    assert m.request_id({"op": "go", "id": "d2"}) == "d2"
    assert m.request_id({"op": "go", "id": 3}) is None and m.request_id("x") is None


def test_unknown_replies_are_refused() -> None:
    with pytest.raises(m.MessageError, match="unknown reply 'spawn'"):
        m.decode_reply({"op": "spawn"})
    with pytest.raises(m.MessageError, match="'exited': pid must be an integer"):
        m.decode_reply({"op": "exited", "id": "d", "pid": "3"})


def test_the_spawner_refuses_bad_requests_in_one_reply_and_goes_on() -> None:
    import socket

    from dynod.linux.spawner import Spawner

    spawner = Spawner("/nonexistent/spawner.sock")  # never bound: handle() is driven directly
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spawner.conn = theirs
    try:
        def reply_to(message: object) -> m.Reply:
            spawner.handle(message)
            return m.decode_reply(json.loads(ours.recv(1 << 16)))

        assert reply_to({"op": "format_disk", "id": "x"}) == m.Refused("x", "unknown request 'format_disk'")
        assert reply_to({"op": "spawn", "spec": {"id": "d1", "evil": True}}).id == "d1"  # type: ignore[union-attr]
        assert reply_to(["not", "an", "object"]) == m.Refused(None, "a message is a JSON object, got list")
        bad_exec = {**m.Exec(EXEC).to_json(), "spec": {**m.Exec(EXEC).to_json()["spec"], "stdio": "log"}}
        refused = reply_to(bad_exec)
        assert isinstance(refused, m.Refused) and refused.id == EXEC.id and "stdio" in refused.message
        assert reply_to(m.Exec(EXEC).to_json()) == m.Refused(EXEC.id, f"dyno {EXEC.dyno} is not running")
        assert reply_to(m.Assign("warm.9", SPEC).to_json()) == m.Refused(SPEC.id, "no warm dyno warm.9 to assign")
        for quiet in (m.Go("nobody"), m.Abort("nobody"), m.Kill("nobody", 9), m.Forget("nobody")):
            spawner.handle(quiet.to_json())  # nothing to do, nothing said
        assert reply_to(m.Hello().to_json()) == m.HelloDone(os.getpid())  # it knows no dynos
    finally:
        ours.close()
        theirs.close()
        spawner.selector.close()
        for fd in (spawner.own_pidns, spawner.own_netns):
            os.close(fd)
