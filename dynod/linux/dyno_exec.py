"""Entering a running dyno (``dynoctl ps:exec``): a new process made of that dyno's own parts.

The spawner forks it straight into the dyno's PID namespace (as it forks dynos into new ones), so
it is the spawner's child and is reaped and reported like any dyno. Before it execs it joins the
dyno's cgroups (so the dyno's memory and pids limits count it and everything it forks), then the
dyno's network, UTS, IPC, cgroup and mount namespaces (its root, its /app, its tmpfs layer), and
then becomes what the dyno's own init is: its uid and gid, its open-files limit, no capabilities,
no_new_privs and the same seccomp profile. Who the dyno is (uid, gid, seccomp, environment,
limits) is read from the dyno's init by the spawner, never taken from the request: an exec
session can never get more than the dyno has.

The parsing here is pure and unit-tested; ``enter_dyno`` runs in the forked child, which must not
start threads or import anything.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from typing import Any

from . import syscalls as sc
from .dyno_init import become_user
from .syscalls import LINUX, Syscalls

# setns order: the mount namespace last, since once in it the host's /proc and cgroup files are
# out of sight; the PID namespace is the spawner's to enter (it applies to the fork that follows).
NAMESPACES = (("net", sc.CLONE_NEWNET), ("uts", sc.CLONE_NEWUTS), ("ipc", sc.CLONE_NEWIPC),
              ("cgroup", sc.CLONE_NEWCGROUP), ("mnt", sc.CLONE_NEWNS))
PID_NAMESPACE = "pid"


class DynoFull(Exception):
    """The dyno has no room for one more process: its pids limit is reached."""


@dataclass
class ExecSpec:
    """What dynod asks for; it travels as JSON. Everything about who runs comes from the dyno."""

    id: str  # the exec session's own id in the spawner, e.g. APP.web.1.abc123.exec.4f2e
    dyno: str  # the running dyno's id
    argv: list[str]
    cgroup_procs: list[str]  # the dyno's cgroup.procs files (host paths)
    env: dict[str, str] = field(default_factory=dict)  # over the dyno's own (TERM, say)
    stdio: str = "pipes"  # "pipes" or "tty"
    rows: int = 24
    cols: int = 80
    cwd: str = "/app"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecSpec:
        spec = cls(**data)
        if spec.stdio not in ("pipes", "tty"):
            raise ValueError(f"an exec session's stdio is pipes or tty, not {spec.stdio!r}")
        if not spec.argv or not all(isinstance(a, str) for a in spec.argv):
            raise ValueError("an exec session needs a command")
        return spec


@dataclass(frozen=True)
class DynoIdentity:
    """Who the dyno's init runs as, and under what; the exec session becomes exactly that."""

    uid: int
    gid: int
    seccomp: bool  # its init runs under the seccomp filter (Seccomp: 2)
    nofile: tuple[int, int]
    env: dict[str, str]


def parse_status(text: str) -> tuple[int, int, int]:
    """Pure: (effective uid, effective gid, seccomp mode) from /proc/PID/status."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value.split()
    try:
        return int(fields["Uid"][1]), int(fields["Gid"][1]), int(fields.get("Seccomp", ["0"])[0])
    except (KeyError, IndexError, ValueError):
        raise ValueError("a /proc/PID/status without Uid and Gid lines") from None


def parse_environ(raw: bytes) -> dict[str, str]:
    """Pure: /proc/PID/environ (NUL-separated NAME=value) as a dict; malformed entries dropped."""
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def parse_nofile(text: str) -> tuple[int, int]:
    """Pure: the (soft, hard) open-files limit from /proc/PID/limits. Read rather than asked with
    prlimit(2), which on another uid's process needs CAP_SYS_RESOURCE, a capability a host may
    withhold even from root."""
    for line in text.splitlines():
        if line.startswith("Max open files"):
            soft, hard = line[len("Max open files"):].split()[:2]
            unlimited = resource.RLIM_INFINITY
            return (unlimited if soft == "unlimited" else int(soft), unlimited if hard == "unlimited" else int(hard))
    raise ValueError("a /proc/PID/limits without its open-files line")


def session_environment(dyno_env: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """Pure: the dyno's own environment (its config vars, PORT, DYNO...) with the session's extras."""
    return {**dyno_env, **extra}


def over_pids_limit(current: str, maximum: str) -> bool:
    """Pure: whether a group's pids.current exceeds its pids.max (``max`` means no limit).

    Joining a group is a migration, which the pids controller never refuses; a fork is refused at
    the limit. Checking right after the join gives the session the same answer a fork would get.
    """
    limit = maximum.strip()
    return limit != "max" and int(current.strip()) > int(limit)


def read_identity(pid: int) -> DynoIdentity:
    """The dyno's init as the host sees it (the spawner, its parent, reads it before forking)."""
    with open(f"/proc/{pid}/status") as f:
        uid, gid, mode = parse_status(f.read())
    if uid == 0 or gid == 0:
        raise ValueError(f"process {pid} runs as root: not a dyno to enter")
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = parse_environ(f.read())
    with open(f"/proc/{pid}/limits") as f:
        nofile = parse_nofile(f.read())
    return DynoIdentity(uid, gid, mode == 2, nofile, env)


def open_namespaces(pid: int) -> dict[str, int]:
    """fds on the dyno's namespaces, opened while its pid surely names it (it is not yet reaped)."""
    fds: dict[str, int] = {}
    try:
        for name in (*(n for n, _ in NAMESPACES), PID_NAMESPACE):
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def _join_cgroups(procs_files: list[str]) -> None:
    for procs in procs_files:
        with open(procs, "w") as f:
            f.write("0")
    for procs in procs_files:
        directory = os.path.dirname(procs)
        try:
            with open(os.path.join(directory, "pids.current")) as f:
                current = f.read()
            with open(os.path.join(directory, "pids.max")) as f:
                maximum = f.read()
        except FileNotFoundError:
            continue  # not the pids hierarchy
        if over_pids_limit(current, maximum):
            raise DynoFull(f"the dyno is at its process limit ({maximum.strip()} processes and threads)")


def join_namespaces(namespaces: dict[str, int], k: Syscalls = LINUX) -> None:
    """setns into each of the dyno's namespaces but its PID one, closing each fd once used."""
    for name, nstype in NAMESPACES:
        k.setns(namespaces[name], nstype)  # the mount namespace last: it also sets root and cwd
        k.close(namespaces[name])


def enter_dyno(spec: ExecSpec, identity: DynoIdentity, namespaces: dict[str, int], *,
               seccomp: sc.SeccompProgram | None) -> None:
    """Everything between the fork (already in the dyno's PID namespace) and exec; never returns."""
    _join_cgroups(spec.cgroup_procs)
    join_namespaces(namespaces)
    os.chdir(spec.cwd if os.path.isdir(spec.cwd) else "/")
    become_user(identity.uid, identity.gid, identity.nofile)
    if identity.seccomp:
        if seccomp is None:
            raise RuntimeError("the spawner has no compiled seccomp profile")
        seccomp.load()
    os.execvpe(spec.argv[0], spec.argv, session_environment(identity.env, spec.env))
