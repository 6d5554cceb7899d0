"""The messages between dynod and its spawner, typed: one frozen dataclass per message, each with
one encode (``to_json``) and one decode (``from_json``); ``decode_request`` and ``decode_reply``
pick the class by the message's ``op``.

The wire is a SOCK_SEQPACKET socket, one JSON object per packet, fds alongside (SCM_RIGHTS) in the
order the message's ``kinds`` names them. The JSON is exactly what the spawner has always spoken:
a spawner outlives dynod, so a dynod upgraded in place must still talk to the one already running.

Requests (dynod -> spawner): spawn, exec, prefork, assign, wired, go, abort, kill, forget, hello,
shutdown, clear_keyrings. Replies (spawner -> dynod): spawned, preforked, cleared, error (to one
request, by id), dyno and hello_done (hello's answer), and the events started and exited, which
the spawner sends on its own.
"""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from .dyno_exec import ExecSpec
from .dyno_init import DynoSpec, PreparedNet


class MessageError(ValueError):
    """A message that is not one of these (unknown op, a field missing or of the wrong type)."""


def _str(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise MessageError(f"{data.get('op')!r}: {key} must be a string, got {value!r}")
    return value


def _int(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{data.get('op')!r}: {key} must be an integer, got {value!r}")
    return value


def _spec(data: dict[str, Any]) -> dict[str, Any]:
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise MessageError(f"{data.get('op')!r}: spec must be an object, got {spec!r}")
    return spec


def dyno_spec_json(spec: DynoSpec) -> dict[str, Any]:
    """A DynoSpec as JSON: what ``DynoSpec.from_json`` reads back (the binds as objects)."""
    return asdict(spec)


def _dyno_spec(data: dict[str, Any]) -> DynoSpec:
    try:
        return DynoSpec.from_json(_spec(data))
    except (TypeError, AttributeError) as exc:  # an unknown or missing field, binds not objects
        raise MessageError(f"{data.get('op')!r}: bad dyno spec: {exc}") from None


# -- requests ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Spawn:
    op: ClassVar[str] = "spawn"
    spec: DynoSpec

    @property
    def id(self) -> str:
        return self.spec.id

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "spec": dyno_spec_json(self.spec)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spawn:
        return cls(_dyno_spec(data))


@dataclass(frozen=True, slots=True)
class Exec:
    op: ClassVar[str] = "exec"
    spec: ExecSpec

    @property
    def id(self) -> str:
        return self.spec.id

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "spec": asdict(self.spec)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Exec:
        try:
            return cls(ExecSpec.from_json(_spec(data)))
        except (TypeError, ValueError) as exc:
            raise MessageError(f"'exec': bad exec spec: {exc}") from None


@dataclass(frozen=True, slots=True)
class Assign:
    """A warm dyno (``id``, from a prefork) becomes dyno ``spec.id``.

    A one-off with pipes is sent as ``assign_pipes``: only a spawner that forks its warm dynos
    with a stdin pipe knows that op, and an older one still running after an upgrade in place
    refuses it (an unknown request, named by the spec's id) rather than making a one-off whose
    stdin is /dev/null; the manager then starts it cold."""
    op: ClassVar[str] = "assign"
    PIPES_OP: ClassVar[str] = "assign_pipes"
    id: str
    spec: DynoSpec

    def to_json(self) -> dict[str, Any]:
        op = self.PIPES_OP if self.spec.stdio == "pipes" else self.op
        return {"op": op, "id": self.id, "spec": dyno_spec_json(self.spec)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Assign:
        return cls(_str(data, "id"), _dyno_spec(data))


@dataclass(frozen=True, slots=True)
class ClearKeyrings:
    op: ClassVar[str] = "clear_keyrings"
    uid: int
    gid: int

    @property
    def id(self) -> str:
        return f"keyrings.{self.uid}"

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "uid": self.uid, "gid": self.gid}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClearKeyrings:
        return cls(_int(data, "uid"), _int(data, "gid"))


@dataclass(frozen=True, slots=True)
class Kill:
    op: ClassVar[str] = "kill"
    id: str
    signal: int = int(signal.SIGKILL)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "signal": int(self.signal)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Kill:
        return cls(_str(data, "id"), _int(data, "signal", int(signal.SIGKILL)))


@dataclass(frozen=True, slots=True)
class _ById:
    """A request that names one dyno (or warm dyno) and nothing else."""
    op: ClassVar[str] = ""
    id: str

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        return cls(_str(data, "id"))


@dataclass(frozen=True, slots=True)
class Prefork:
    """Fork a warm dyno now; it waits for an Assign. With ``mnt`` (and the tmpfs size every
    dyno's spec will carry) it makes the spec-free part of its root meanwhile
    (dyno_init.prepare_dyno); with ``net`` it addresses its interface once told Wired. An assign
    whose spec differs from any of these is refused."""
    op: ClassVar[str] = "prefork"
    id: str
    mnt: str = ""
    tmpfs_mb: int = 0
    net: PreparedNet | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"op": self.op, "id": self.id, "mnt": self.mnt, "tmpfs_mb": self.tmpfs_mb}
        if self.net is not None:
            data["net"] = asdict(self.net)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prefork:
        net = data.get("net")
        if net is not None:
            if not isinstance(net, dict):
                raise MessageError(f"'prefork': net must be an object, got {net!r}")
            named = {**net, "op": "prefork net"}  # errors name the object they are in
            gateway = net.get("gateway")
            net = PreparedNet(_str(named, "ifname"), _str(named, "address"), _int(named, "prefix"),
                              None if gateway is None else _str(named, "gateway"))
        return cls(_str(data, "id"), _str(data, "mnt", ""), _int(data, "tmpfs_mb", 0), net)


@dataclass(frozen=True, slots=True)
class Wired(_ById):
    """A warm dyno forked with a net is in its cgroups and has its veth: it addresses its
    interface and makes its cgroup namespace now, before any spec."""
    op: ClassVar[str] = "wired"


@dataclass(frozen=True, slots=True)
class Go(_ById):
    """The dyno is wired (cgroups, veth): it may exec its init."""
    op: ClassVar[str] = "go"


@dataclass(frozen=True, slots=True)
class Abort(_ById):
    """The dyno will never be wired: it exits instead of running (ignored once Go was sent)."""
    op: ClassVar[str] = "abort"


@dataclass(frozen=True, slots=True)
class Forget(_ById):
    """dynod is done with the dyno: the spawner drops it and its fds."""
    op: ClassVar[str] = "forget"


@dataclass(frozen=True, slots=True)
class Hello:
    """dynod (re)connected: report every dyno still known, with fresh copies of their fds."""
    op: ClassVar[str] = "hello"

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hello:
        return cls()


@dataclass(frozen=True, slots=True)
class Shutdown:
    op: ClassVar[str] = "shutdown"
    force: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "force": self.force}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shutdown:
        return cls(bool(data.get("force", False)))


Request = Spawn | Exec | Assign | ClearKeyrings | Kill | Prefork | Wired | Go | Abort | Forget | Hello | Shutdown
_REQUESTS: dict[str, Any] = {c.op: c for c in (Spawn, Exec, Assign, ClearKeyrings, Kill, Prefork, Wired, Go,
                                               Abort, Forget, Hello, Shutdown)}
_REQUESTS[Assign.PIPES_OP] = Assign


def decode_request(data: object) -> Request:
    """A request from its JSON; MessageError for anything else."""
    if not isinstance(data, dict):
        raise MessageError(f"a message is a JSON object, got {type(data).__name__}")
    kind = _REQUESTS.get(data.get("op"))  # type: ignore[arg-type]
    if kind is None:
        raise MessageError(f"unknown request {data.get('op')!r}")
    return kind.from_json(data)  # type: ignore[no-any-return]


def request_id(data: object) -> str | None:
    """The id an error reply to this (possibly malformed) request carries, if it names one."""
    if not isinstance(data, dict):
        return None
    spec = data.get("spec")
    found = spec.get("id") if isinstance(spec, dict) else data.get("id")
    return found if isinstance(found, str) else None


# -- replies and events --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Spawned:
    """A dyno (or exec session) was forked; its fds come with the packet, in ``kinds`` order.
    ``wired``: the spawner made its veth itself (dynod.linux.veth); else dynod makes it."""
    op: ClassVar[str] = "spawned"
    id: str
    pid: int
    kinds: tuple[str, ...] = ()
    wired: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "id": self.id, "pid": self.pid, "kinds": list(self.kinds)}
        if self.wired:
            data["wired"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spawned:
        return cls(_str(data, "id"), _int(data, "pid"), tuple(data.get("kinds", ())), data.get("wired") is True)


@dataclass(frozen=True, slots=True)
class Preforked:
    op: ClassVar[str] = "preforked"
    id: str
    pid: int

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "pid": self.pid}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preforked:
        return cls(_str(data, "id"), _int(data, "pid"))


@dataclass(frozen=True, slots=True)
class Cleared:
    op: ClassVar[str] = "cleared"
    id: str

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cleared:
        return cls(_str(data, "id"))


@dataclass(frozen=True, slots=True)
class Refused:
    """The spawner's ``error``: the request of ``id`` (None: one it could not read) failed."""
    op: ClassVar[str] = "error"
    id: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "message": self.message}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Refused:
        found = data.get("id")
        return cls(found if isinstance(found, str) else None, str(data.get("message", "refused")))


@dataclass(frozen=True, slots=True)
class Started:
    """The dyno's init was exec'd (an event)."""
    op: ClassVar[str] = "started"
    id: str
    pid: int

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "pid": self.pid}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Started:
        return cls(_str(data, "id"), _int(data, "pid"))


@dataclass(frozen=True, slots=True)
class Exited:
    """The dyno's init was reaped (an event). ``error``: it failed before it ran."""
    op: ClassVar[str] = "exited"
    id: str
    pid: int
    status: int | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "pid": self.pid, "status": self.status, "error": self.error}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Exited:
        status = data.get("status")
        return cls(_str(data, "id"), _int(data, "pid"), None if status is None else _int(data, "status"),
                   _str(data, "error", ""))


@dataclass(frozen=True, slots=True)
class DynoReport:
    """One dyno the spawner knows, in answer to Hello; fresh copies of its fds come with it."""
    op: ClassVar[str] = "dyno"
    id: str
    pid: int
    kinds: tuple[str, ...] = ()
    status: int | None = None
    error: str = ""
    started: bool = False
    spawned_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "pid": self.pid, "kinds": list(self.kinds), "status": self.status,
                "error": self.error, "started": self.started, "spawned_at": self.spawned_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DynoReport:
        status = data.get("status")
        return cls(_str(data, "id"), _int(data, "pid"), tuple(data.get("kinds", ())),
                   None if status is None else _int(data, "status"), _str(data, "error", ""),
                   bool(data.get("started", False)), float(data.get("spawned_at", 0.0)))


@dataclass(frozen=True, slots=True)
class HelloDone:
    op: ClassVar[str] = "hello_done"
    pid: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "pid": self.pid}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HelloDone:
        return cls(_int(data, "pid", 0))


Reply = Spawned | Preforked | Cleared | Refused | Started | Exited | DynoReport | HelloDone
_REPLIES: dict[str, Any] = {c.op: c for c in (Spawned, Preforked, Cleared, Refused, Started, Exited, DynoReport,
                                              HelloDone)}


def decode_reply(data: object) -> Reply:
    """A reply or event from its JSON; MessageError for anything else."""
    if not isinstance(data, dict):
        raise MessageError(f"a message is a JSON object, got {type(data).__name__}")
    kind = _REPLIES.get(data.get("op"))  # type: ignore[arg-type]
    if kind is None:
        raise MessageError(f"unknown reply {data.get('op')!r}")
    return kind.from_json(data)  # type: ignore[no-any-return]


__all__ = ["Abort", "Assign", "Cleared", "ClearKeyrings", "DynoReport", "Exec", "Exited", "Forget", "Go", "Hello",
           "HelloDone", "Kill", "MessageError", "Prefork", "Preforked", "Refused", "Reply", "Request", "Shutdown",
           "Spawn", "Spawned", "Started", "Wired", "decode_reply", "decode_request", "dyno_spec_json", "request_id"]
