"""The spawner: a small single-threaded process that forks dynos and outlives dynod.

Why a separate process: namespace set-up needs fork without threads around (trio and pyroute2
run threads), and because the spawner is not dynod, dynod can crash or be upgraded while dynos
keep running; a restarted dynod connects again and re-adopts them. The spawner is every dyno's
parent, so it alone can reap them: it keeps each exit status until dynod acknowledges it.

Protocol: one SOCK_SEQPACKET unix socket, one JSON object per message, fds passed with
SCM_RIGHTS. dynod -> spawner: spawn, exec, clear_keyrings, prefork, assign, wired, go, abort, kill,
forget, hello, shutdown. spawner -> dynod: spawned (+ the dyno's stdio fds), started, exited, dyno (+fds, on hello),
hello_done, error. See docs/architecture.md.

Run as ``python -m dynod.linux.spawner --socket PATH``.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import pty
import selectors
import signal
import socket
import struct
import sys
import termios
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

import prctl

from . import dyno_exec, idmap, keyring, seccomp, veth
from . import spawn_messages as m
from . import syscalls as sc
from .cgroups import birth as cgroup_birth
from .cgroups.paths import read_mounts
from .cgroups.view import CgroupMount, dyno_cgroup_mounts
from .dyno_init import DynoSpec, PreparedNet, become_dyno, prepare_dyno, prepare_network

F_SETPIPE_SZ = 1031
LOG_PIPE_BYTES = 1 << 20  # room for a dyno's output while dynod restarts, before writes block
MAX_MESSAGE = 1 << 20


@dataclass
class Child:
    id: str
    pid: int
    kinds: list[str]
    fds: list[int]  # the spawner's own copies, handed again to a re-connecting dynod
    go_w: int
    err_r: int
    spec_w: int = -1  # a warm dyno's: its spec is written here when dynod assigns it
    stdin_w: int = -1  # a warm dyno's stdin pipe: handed to dynod by an assign with pipes, else closed
    prepared: tuple[str, int] | None = None  # a warm dyno's (mnt, tmpfs_mb) its root was prepared for
    prepared_net: PreparedNet | None = None  # a warm dyno's interface, addressed once dynod says Wired
    status: int | None = None
    error: str = ""
    started: bool = False
    links: tuple[str, ...] = ()  # its veth and bridge (host side), settled when it execs
    spawned_at: float = field(default_factory=time.time)


def _links(spec: DynoSpec) -> tuple[str, ...]:
    """The host side of a dyno's network: its veth and the bridge it hangs on (none without)."""
    net = spec.net or {}
    bridge = net.get("on_bridge")
    if not bridge or not net.get("address"):
        return ()
    return (veth.veth_name(net["address"]), bridge)


def exit_code(status: int) -> int:
    """Shell convention: the exit code, or 128+N for death by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


class Spawner:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.children: dict[str, Child] = {}
        self.by_pid: dict[int, Child] = {}
        self.by_err_fd: dict[int, Child] = {}
        self.conn: socket.socket | None = None
        self.selector = selectors.DefaultSelector()
        self.running = True
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.own_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        # Worked out once here, inherited by every forked child: the seccomp profile compiled to
        # BPF (libseccomp takes tens of ms; loading the result in a child takes one prctl), and
        # which cgroup hierarchies a dyno mounts to see its own limits.
        self.seccomp = sc.SeccompProgram(seccomp.compile_profile())
        with open("/proc/self/mountinfo") as f:
            self.cgroup_mounts: list[CgroupMount] = dyno_cgroup_mounts(f.read())
        # Where cgroup2 is mounted, for forking a dyno straight into a cgroup2 group (clone3 with
        # CLONE_INTO_CGROUP: no move, no wait after the fork); False once the kernel said no.
        self.hierarchies = read_mounts()
        self.clone_into = True
        self.userns: dict[tuple[tuple[int, ...], ...], int] = {}  # id maps -> a user namespace fd, kept

    def userns_path(self, maps: dict[str, list[list[int]]]) -> str:
        """Where a child opens the user namespace holding ``maps`` (made on first need, kept: one
        per app uid). A path rather than an inherited fd: a warm dyno forked before the namespace
        existed can still open it, through the host's /proc, before it pivots."""
        key = idmap.idmap_key(maps)
        fd = self.userns.get(key)
        if fd is None:
            fd = self.userns[key] = idmap.make_userns(maps)
        return f"/proc/{os.getpid()}/fd/{fd}"

    # -- plumbing ---------------------------------------------------------------------------
    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        if self.conn is None:
            return
        data = json.dumps(message).encode()
        try:
            if fds:
                socket.send_fds(self.conn, [data], fds)
            else:
                self.conn.send(data)
        except OSError:
            self.drop_connection()

    def drop_connection(self) -> None:
        if self.conn is not None:
            self.selector.unregister(self.conn)
            self.conn.close()
            self.conn = None

    # -- dyno lifecycle ---------------------------------------------------------------------
    def spawn(self, spec: DynoSpec) -> None:
        if spec.idmap is not None:
            spec.userns_path = self.userns_path(spec.idmap)
        if spec.id in self.children:
            self.send(m.Refused(spec.id, f"dyno {spec.id} exists").to_json())
            return
        plan = cgroup_birth.birth(spec.cgroup_procs, self.hierarchies)
        parent_fds, child_fds, kinds = self._stdio(spec)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid, joins = self._fork_into(plan, spec.cgroup_procs)
        except OSError:
            _close_all({*parent_fds, *child_fds, go_r, go_w, err_r, err_w})  # the spawner lives long
            raise
        if pid == 0:
            self._child(replace(spec, cgroup_procs=joins), child_fds, go_r, err_w)  # never returns
        for fd in {*child_fds, go_r, err_w}:  # a pty slave stands for all three of 0, 1, 2
            os.close(fd)
        wired = self._wire(spec, pid)  # while the child builds its root
        self.send(m.Spawned(spec.id, pid, tuple(kinds), wired).to_json(), parent_fds)
        if "stdin" in kinds:
            # dynod alone may hold the write end: the dyno must see EOF when dynod closes it.
            os.close(parent_fds[kinds.index("stdin")])
            parent_fds = [fd for fd, kind in zip(parent_fds, kinds, strict=True) if kind != "stdin"]
            kinds = [kind for kind in kinds if kind != "stdin"]
        child = Child(spec.id, pid, kinds, parent_fds, go_w, err_r, links=_links(spec))
        self.children[spec.id] = child
        self.by_pid[pid] = child
        self.by_err_fd[err_r] = child
        self.selector.register(err_r, selectors.EVENT_READ, "err")

    @staticmethod
    def _wire(spec: DynoSpec, pid: int) -> bool:
        """The dyno's veth, when its spec names the bridge for it (``net["bridge"]``): made here,
        named after its address as dynod names it, so dynod can send go as soon as it hears the
        pid. False (dynod makes it) on any refusal: a leftover link of the same name, another
        dynod's, a kernel that says no."""
        net = spec.net or {}
        if not net.get("bridge"):
            return False
        try:
            veth.make_veth(veth.veth_name(net["address"]), net["bridge"], net["ifname"], pid)
        except (OSError, KeyError, ValueError) as exc:
            print(f"spawner: the veth of {spec.id} is left to dynod: {exc}", file=sys.stderr, flush=True)
            return False
        return True

    def _fork_into(self, plan: cgroup_birth.Birth, procs_files: list[str]) -> tuple[int, list[str]]:
        """(pid or 0, the cgroup.procs files the child still joins itself): born in the plan's
        cgroup2 group where it has one and the kernel can (5.7+), else forked and left to join all."""
        if plan.into is not None and self.clone_into:
            group = cgroup_birth.open_group(plan.into)
            try:
                return sc.clone3(sc.CLONE_NEWPID | sc.CLONE_NEWNET, group), list(plan.joins)
            except OSError as exc:
                if exc.errno not in cgroup_birth.UNSUPPORTED:
                    raise
                self.clone_into = False
            finally:
                if os.getpid() == self.mypid:
                    os.close(group)
        return self._fork(), list(procs_files)

    def _fork(self) -> int:
        """fork() with the child born in its own PID namespace (as PID 1) and its own network
        namespace (dynos and builds alike: nothing shares the host's): dynod adds its veth as soon
        as it hears the pid, so the namespace must exist before the pid is told. The spawner steps
        back into its own namespaces right after the fork."""
        sc.unshare(sc.CLONE_NEWPID | sc.CLONE_NEWNET)
        try:
            return os.fork()
        finally:
            if os.getpid() == self.mypid:
                sc.setns(self.own_pidns, sc.CLONE_NEWPID)
                sc.setns(self.own_netns, sc.CLONE_NEWNET)

    def prefork(self, pool_id: str, mnt: str = "", tmpfs_mb: int = 0, net: PreparedNet | None = None) -> None:
        """A warm dyno: forked now into fresh namespaces, told what to run later by ``assign``.
        With ``mnt`` it prepares the spec-free part of its root while it waits
        (dyno_init.prepare_dyno): a start from the pool no longer makes its tmpfs, /proc and /dev.
        With ``net`` it also addresses its interface and makes its cgroup namespace, once dynod
        says it is wired (``wired``): a start from the pool no longer does either.

        dynod moves it into a cgroup and wires its veth while nobody waits; taking it then costs a
        write of its spec instead of a fork, cgroup moves and a veth. Its stdio is made as for
        ``pipes`` (stdin a pipe too), so that it can become a dyno that logs its output or an
        attached one-off without a terminal; the first gets /dev/null as stdin at assign time.
        """
        if pool_id in self.children:
            self.send({"op": "error", "id": pool_id, "message": f"{pool_id} exists"})
            return
        parent_fds, child_fds, kinds = self._stdio(replace(DynoSpec.log_only(), stdio="pipes"))
        spec_r, spec_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = self._fork()
        except OSError:
            _close_all({*parent_fds, *child_fds, spec_r, spec_w, go_r, go_w, err_r, err_w})
            raise
        if pid == 0:
            self._warm_child(child_fds, spec_r, go_r, err_w, (mnt, tmpfs_mb) if mnt else None, net)  # never returns
        for fd in {*child_fds, spec_r, go_r, err_w}:
            os.close(fd)
        stdin_w = parent_fds[kinds.index("stdin")]
        parent_fds = [fd for fd, kind in zip(parent_fds, kinds, strict=True) if kind != "stdin"]
        kinds = [kind for kind in kinds if kind != "stdin"]
        child = Child(pool_id, pid, kinds, parent_fds, go_w, err_r, spec_w=spec_w, stdin_w=stdin_w,
                      prepared=(mnt, tmpfs_mb) if mnt else None, prepared_net=net)
        self.children[pool_id] = child
        self.by_pid[pid] = child
        self.by_err_fd[err_r] = child
        self.selector.register(err_r, selectors.EVENT_READ, "err")
        self.send({"op": "preforked", "id": pool_id, "pid": pid})

    def assign(self, pool_id: str, spec: DynoSpec) -> None:
        spec_id = spec.id
        child = self.children.get(pool_id)
        if child is None or child.spec_w < 0 or child.status is not None or spec_id in self.children:
            self.send(m.Refused(spec_id, f"no warm dyno {pool_id} to assign").to_json())
            return
        if spec.stdio not in ("log", "pipes"):
            self.send(m.Refused(spec_id, f"a warm dyno has no {spec.stdio} stdio (log or pipes only)").to_json())
            return
        if child.prepared is not None and child.prepared != (spec.mnt, spec.tmpfs_mb):
            # Its tmpfs is at another place or of another size than this spec asks for (the
            # settings changed since it was forked): dynod discards it and starts the dyno cold.
            self.send(m.Refused(spec_id, f"warm dyno {pool_id} was prepared for {child.prepared}, "
                                f"not {(spec.mnt, spec.tmpfs_mb)}").to_json())
            return
        if child.prepared_net is not None and not child.prepared_net.matches(spec.net):
            self.send(m.Refused(spec_id, f"warm dyno {pool_id} was prepared for the network "
                                f"{child.prepared_net}, not {spec.net}").to_json())
            return
        if spec.idmap is not None:
            try:
                spec = replace(spec, userns_path=self.userns_path(spec.idmap))
            except OSError as exc:
                self.send(m.Refused(spec_id, f"no user namespace for its uid: {exc}").to_json())
                return
        data = json.dumps(m.dyno_spec_json(spec)).encode()
        try:
            os.write(child.spec_w, struct.pack("!I", len(data)))
            view = memoryview(data)
            while view:  # the warm child reads as we write: a spec larger than the pipe is fine
                view = view[os.write(child.spec_w, view):]
        except OSError as exc:
            self.send(m.Refused(spec_id, f"warm dyno {pool_id} is gone: {exc}").to_json())
            return
        finally:
            os.close(child.spec_w)
            child.spec_w = -1
        del self.children[pool_id]
        child.id = spec_id
        child.links = _links(spec)
        self.children[spec_id] = child
        if spec.stdio == "pipes":
            self.send(m.Spawned(spec_id, child.pid, ("stdin", *child.kinds)).to_json(), [child.stdin_w, *child.fds])
        else:
            self.send(m.Spawned(spec_id, child.pid, tuple(child.kinds)).to_json(), child.fds)
        # dynod alone may hold the write end (the dyno must see EOF when dynod closes it); a dyno
        # that logs has /dev/null as stdin and never reads this pipe.
        os.close(child.stdin_w)
        child.stdin_w = -1

    def _warm_child(self, stdio: list[int], spec_r: int, go_r: int, err_w: int,
                    prepare: tuple[str, int] | None, net: PreparedNet | None) -> None:
        try:
            self._reset_signals()
            keep = {*stdio, spec_r, go_r, err_w}
            self._close_all_but(keep)
            # Opened before its own mount namespace, on the host's /dev as a cold dyno's stdin is
            # (spawner._stdio): opened after, it would name a mount the pivot detaches ("/null").
            null = os.open("/dev/null", os.O_RDONLY)
            if prepare is not None:
                prepare_dyno(*prepare)
            if net is not None and not prepare_network(net, go_r):
                os._exit(0)  # discarded before it was wired
            header = _read_exactly(spec_r, 4)
            if not header:
                os._exit(0)  # discarded before use
            spec = DynoSpec.from_json(json.loads(_read_exactly(spec_r, struct.unpack("!I", header)[0])))
            os.close(spec_r)
            if spec.stdio != "pipes":  # stdin as a cold dyno that logs has it
                os.close(stdio[0])
                stdio = [null, *stdio[1:]]
            else:
                os.close(null)
            os.setsid()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target, inheritable=True)
                # The fds 0-2 were closed above, so /dev/null may have been opened as 0 itself:
                # dup2 onto the same fd changes nothing, and it would still close at exec.
                os.set_inheritable(target, True)
            for fd in set(stdio) - {0, 1, 2}:
                os.close(fd)
            become_dyno(spec, go_r, seccomp=self.seccomp, cgroup_mounts=self.cgroup_mounts,
                        prepared=prepare is not None, networked=net is not None)
        except BaseException as exc:  # noqa: BLE001 - everything must reach dynod as one line
            self._die(err_w, exc)

    @staticmethod
    def _reset_signals() -> None:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)

    @staticmethod
    def _close_all_but(keep: set[int]) -> None:
        # close_range(2) over the gaps (os.closerange uses it): ~0.06 ms in a forked child, where
        # listing /proc/self/fd and closing one by one took ~0.3 ms.
        low = 0
        for fd in sorted(keep):
            if fd > low:
                os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))

    @staticmethod
    def _die(err_w: int, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, (OSError, dyno_exec.DynoFull)):
            message += " | " + traceback.format_exc().replace("\n", " | ")[-800:]
        try:
            os.write(err_w, message.encode()[:4000])
        finally:
            os._exit(127)

    def _stdio(self, spec: DynoSpec) -> tuple[list[int], list[int], list[str]]:
        """(fds the spawner keeps, fds 0/1/2 for the child, kinds of the kept ones)."""
        if spec.stdio == "tty":
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", spec.rows, spec.cols, 0, 0))
            os.set_inheritable(master, False)
            return [master], [slave, slave, slave], ["pty"]
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for fd in (out_r, err_r):
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, LOG_PIPE_BYTES)
            except OSError:
                pass  # above /proc/sys/fs/pipe-max-size: keep the default
        if spec.stdio == "pipes":
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            return [in_w, out_r, err_r], [in_r, out_w, err_w], ["stdin", "stdout", "stderr"]
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        return [out_r, err_r], [null, out_w, err_w], ["stdout", "stderr"]

    def _child(self, spec: DynoSpec, stdio: list[int], go_r: int, err_w: int) -> None:
        try:
            self._reset_signals()
            os.setsid()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target, inheritable=True)
            if spec.stdio == "tty":
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            self._close_all_but({0, 1, 2, go_r, err_w})
            become_dyno(spec, go_r, seccomp=self.seccomp, cgroup_mounts=self.cgroup_mounts)
        except BaseException as exc:  # noqa: BLE001 - everything must reach dynod as one line
            self._die(err_w, exc)

    def exec(self, spec: dyno_exec.ExecSpec) -> None:
        """A process entering a running dyno (dynod.linux.dyno_exec), reported like a dyno.

        Only a dyno this spawner forked and has not reaped may be entered: until it is reaped its
        pid cannot name another process, so what is read from /proc/PID is surely that dyno's.
        """
        if spec.id in self.children:
            self.send(m.Refused(spec.id, f"{spec.id} exists").to_json())
            return
        target = self.children.get(spec.dyno)
        if target is None or target.status is not None or not target.started or target.pid not in self.by_pid:
            self.send(m.Refused(spec.id, f"dyno {spec.dyno} is not running").to_json())
            return
        identity = dyno_exec.read_identity(target.pid)
        namespaces = dyno_exec.open_namespaces(target.pid)
        parent_fds, child_fds, kinds = self._stdio(
            replace(DynoSpec.log_only(), stdio=spec.stdio, rows=spec.rows, cols=spec.cols))
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            # Born in the dyno's PID namespace, as dynos are born in new ones (see _fork).
            sc.setns(namespaces[dyno_exec.PID_NAMESPACE], sc.CLONE_NEWPID)
            try:
                pid = os.fork()
            finally:
                if os.getpid() == self.mypid:
                    sc.setns(self.own_pidns, sc.CLONE_NEWPID)
        except OSError:
            _close_all({*parent_fds, *child_fds, err_r, err_w, *namespaces.values()})
            raise
        if pid == 0:
            self._exec_child(spec, identity, namespaces, child_fds, err_w)  # never returns
        _close_all({*child_fds, err_w, *namespaces.values()})
        self.send(m.Spawned(spec.id, pid, tuple(kinds)).to_json(), parent_fds)
        if "stdin" in kinds:  # dynod alone holds the write end, as for an attached run
            os.close(parent_fds[kinds.index("stdin")])
            parent_fds = [fd for fd, kind in zip(parent_fds, kinds, strict=True) if kind != "stdin"]
            kinds = [kind for kind in kinds if kind != "stdin"]
        child = Child(spec.id, pid, kinds, parent_fds, -1, err_r)
        self.children[spec.id] = child
        self.by_pid[pid] = child
        self.by_err_fd[err_r] = child
        self.selector.register(err_r, selectors.EVENT_READ, "err")

    def _exec_child(self, spec: dyno_exec.ExecSpec, identity: dyno_exec.DynoIdentity,
                    namespaces: dict[str, int], stdio: list[int], err_w: int) -> None:
        try:
            self._reset_signals()
            os.setsid()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target, inheritable=True)
            if spec.stdio == "tty":
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            self._close_all_but({0, 1, 2, err_w, *namespaces.values()})
            os.close(namespaces.pop(dyno_exec.PID_NAMESPACE))
            dyno_exec.enter_dyno(spec, identity, namespaces, seccomp=self.seccomp)
        except BaseException as exc:  # noqa: BLE001 - everything must reach dynod as one line
            self._die(err_w, exc)

    def wired(self, pool_id: str) -> None:
        """A warm dyno forked with a net is wired: it addresses its interface now (one byte on
        its go pipe, which stays open for the go of its start)."""
        child = self.children.get(pool_id)
        if child is None or child.prepared_net is None or child.spec_w < 0 or child.go_w < 0:
            return
        try:
            os.write(child.go_w, b"w")
        except OSError:
            pass  # it died meanwhile: its exit says so

    def go(self, dyno_id: str, proceed: bool) -> None:
        child = self.children.get(dyno_id)
        if child is None or child.go_w < 0:
            return
        if proceed:
            try:
                os.write(child.go_w, b"g")
            except OSError:
                pass
        os.close(child.go_w)
        child.go_w = -1

    def on_error_pipe(self, fd: int) -> None:
        child = self.by_err_fd[fd]
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if data:
            child.error += data.decode(errors="replace")
            return
        # EOF: either exec succeeded (close-on-exec) or the child died after writing its error.
        self.selector.unregister(fd)
        os.close(fd)
        del self.by_err_fd[fd]
        child.err_r = -1
        if not child.error and child.status is None:
            # It configured its eth0 before the exec: traffic to it flows from now, not from
            # the kernel's next linkwatch batch (veth.settle_carrier).
            veth.settle_carrier(*child.links)
            child.started = True
            self.send({"op": "started", "id": child.id, "pid": child.pid})
        self._maybe_report_exit(child)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.by_pid.pop(pid, None)
            if child is None:
                continue  # an orphan re-parented to us as subreaper
            child.status = exit_code(status)
            self._maybe_report_exit(child)

    def _maybe_report_exit(self, child: Child) -> None:
        # Report once both the exit status and the error pipe's last word are in.
        if child.status is not None and child.err_r < 0:
            for attr in ("go_w", "spec_w", "stdin_w"):
                if getattr(child, attr) >= 0:
                    os.close(getattr(child, attr))
                    setattr(child, attr, -1)
            self.send({"op": "exited", "id": child.id, "pid": child.pid, "status": child.status,
                       "error": child.error})

    def forget(self, dyno_id: str) -> None:
        child = self.children.get(dyno_id)
        if child is None or child.status is None:
            return
        for fd in child.fds:
            os.close(fd)
        del self.children[dyno_id]

    def kill(self, dyno_id: str, sig: int) -> None:
        child = self.children.get(dyno_id)
        # Only while not yet reaped: after waitpid the pid may belong to someone else.
        if child is not None and child.status is None and child.pid in self.by_pid:
            try:
                os.kill(child.pid, sig)
            except ProcessLookupError:
                pass

    def hello(self) -> None:
        for child in list(self.children.values()):
            self.send({"op": "dyno", "id": child.id, "pid": child.pid, "kinds": child.kinds,
                       "status": child.status, "error": child.error, "started": child.started,
                       "spawned_at": child.spawned_at}, child.fds)
        self.send({"op": "hello_done", "pid": os.getpid()})

    # -- main loop --------------------------------------------------------------------------
    def handle(self, message: object) -> None:
        try:
            request = m.decode_request(message)
        except Exception as exc:  # noqa: BLE001 - a bad message must not take the spawner down
            self.send(m.Refused(m.request_id(message), str(exc)).to_json())
            return
        if isinstance(request, m.Spawn):
            try:
                self.spawn(request.spec)
            except Exception as exc:  # noqa: BLE001 - a bad spec must not take the spawner down
                self.send(m.Refused(request.id, str(exc)).to_json())
        elif isinstance(request, m.Exec):
            try:
                self.exec(request.spec)
            except Exception as exc:  # noqa: BLE001 - a dyno gone meanwhile must not take the spawner down
                self.send(m.Refused(request.id, str(exc)).to_json())
        elif isinstance(request, m.ClearKeyrings):
            try:
                keyring.clear_as(request.uid, request.gid)
                self.send(m.Cleared(request.id).to_json())
            except Exception as exc:  # noqa: BLE001 - one app's leftovers must not take the spawner down
                self.send(m.Refused(request.id, str(exc)).to_json())
        elif isinstance(request, m.Prefork):
            try:
                self.prefork(request.id, request.mnt, request.tmpfs_mb, request.net)
            except Exception as exc:  # noqa: BLE001
                self.send(m.Refused(request.id, str(exc)).to_json())
        elif isinstance(request, m.Assign):
            self.assign(request.id, request.spec)
        elif isinstance(request, m.Wired):
            self.wired(request.id)
        elif isinstance(request, m.Go):
            self.go(request.id, True)
        elif isinstance(request, m.Abort):
            self.go(request.id, False)
        elif isinstance(request, m.Kill):
            self.kill(request.id, request.signal)
        elif isinstance(request, m.Forget):
            self.forget(request.id)
        elif isinstance(request, m.Hello):
            self.hello()
        elif isinstance(request, m.Shutdown):
            live = [c.id for c in self.children.values() if c.status is None]
            if live and not request.force:
                self.send({"op": "error", "message": f"{len(live)} dynos still run"})
            else:
                for child in self.children.values():
                    self.kill(child.id, signal.SIGKILL)
                self.running = False

    def serve(self) -> None:
        self.mypid = os.getpid()
        prctl.set_child_subreaper(1)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o077)
        listener.bind(self.socket_path)
        os.umask(old_umask)
        listener.listen(4)
        self.selector.register(listener, selectors.EVENT_READ, "listen")
        self.selector.register(wake_r, selectors.EVENT_READ, "signal")
        print(f"spawner {os.getpid()} ready on {self.socket_path}", file=sys.stderr, flush=True)
        while self.running or any(c.status is None for c in self.children.values()):
            if not self.running:
                self.reap()
                if not any(c.status is None for c in self.children.values()):
                    break
            for key, _ in self.selector.select(timeout=None if self.running else 0.05):
                if key.data == "listen":
                    conn, _ = listener.accept()
                    self.drop_connection()  # one dynod at a time: the newest is the live one
                    self.conn = conn
                    self.selector.register(conn, selectors.EVENT_READ, "conn")
                elif key.data == "signal":
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                    self.reap()
                elif key.data == "err":
                    self.on_error_pipe(key.fd)
                elif key.data == "conn":
                    self._read_connection()
        listener.close()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def _read_connection(self) -> None:
        assert self.conn is not None
        try:
            data = self.conn.recv(MAX_MESSAGE)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EINTR):
                return
            data = b""
        if not data:
            self.drop_connection()
            return
        try:
            message = json.loads(data)
        except ValueError:
            self.send({"op": "error", "message": "not JSON"})
            return
        self.handle(message)


def _close_all(fds: set[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _read_exactly(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            return data
        data += chunk
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynod-spawner")
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    Spawner(args.socket).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
