"""What the freshly forked dyno process does to itself before it becomes the app.

It runs in the spawner's forked child, which is already PID 1 of a new PID namespace, and goes
through clear stages: join the cgroup, new namespaces, the filesystem (overlay root, /proc, a
minimal /dev, masks), pivot_root, hostname, wait for the host to wire its veth, network, and
privileges; then exec the init (tini) that reaps and forwards signals for the app. Nothing here
may start threads or import lazily: this is a forked child of a single-threaded parent.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from typing import Any

import prctl

from . import netconf
from . import syscalls as sc
from .cgroups.view import CgroupMount
from .syscalls import LINUX, Syscalls

NAMESPACES = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
MASKED_FILES = ("kcore", "keys", "timer_list", "sysrq-trigger", "latency_stats", "sched_debug")
READ_ONLY_PROC = ("sys", "irq", "bus", "fs")


@dataclass
class Bind:
    source: str
    target: str  # inside the dyno
    writable: bool = False


@dataclass
class DynoSpec:
    """Everything the spawner needs to make one dyno; it travels as JSON from dynod."""

    id: str
    hostname: str
    argv: list[str]
    env: dict[str, str]
    lower: list[str]  # overlay lowerdirs, top first: the slug dir (holding app/), then the stack
    mnt: str  # an empty host directory; each dyno mounts its tmpfs over it in its own mount ns
    # cgroup.procs files the child writes itself into. Empty when the parent moves it instead:
    # each v1 move waits out an RCU grace period, which dynod's threads can overlap with each
    # other and with wiring the veth, while a lone child would wait them out one by one.
    cgroup_procs: list[str]
    uid: int
    gid: int
    tmpfs_mb: int = 1024
    cwd: str = "/app"
    # {"ifname", "address", "prefix", "gateway", "on_bridge"} (+ "bridge": the spawner makes the
    # veth there); None: lo only
    net: dict[str, Any] | None = None
    binds: list[Bind] = field(default_factory=list)
    stdio: str = "log"  # "log" (stdout/stderr pipes), "pipes" (+stdin), "tty" (a pty)
    rows: int = 24
    cols: int = 80
    nofile: int = 10000  # Heroku's open-files limit
    # "default": the seccomp profile of dynod.linux.seccomp; "unconfined": none (an app listed in
    # [dynos] seccomp_unconfined_apps). Anything else is refused, so a typo never means "none".
    seccomp: str = "default"
    # The app's own uid/gid over files owned by the stack's dyno user (dynod.linux.idmap): the
    # maps through which every lowerdir above the stack (the slug) and every bind are shown, and
    # where the spawner keeps the user namespace that holds them (filled in by the spawner).
    idmap: dict[str, list[list[int]]] | None = None
    userns_path: str = ""

    @classmethod
    def log_only(cls) -> DynoSpec:
        """A spec with nothing but a stdio shape (a warm dyno's before it knows what it will run,
        an exec's): it logs its output unless ``stdio`` is replaced."""
        return cls(id="", hostname="", argv=[], env={}, lower=[], mnt="", cgroup_procs=[], uid=0, gid=0)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DynoSpec:
        data = dict(data)
        data["binds"] = [Bind(**b) for b in data.get("binds", [])]
        return cls(**data)


@dataclass(frozen=True)
class PreparedNet:
    """The interface a warm dyno addresses while it waits (prepare_network): the pool's address
    it was wired with. An assign whose spec names another is refused."""

    ifname: str
    address: str
    prefix: int
    gateway: str | None = None

    def matches(self, net: dict[str, Any] | None) -> bool:
        net = net or {}
        return (net.get("ifname"), net.get("address"), net.get("prefix", 24), net.get("gateway")) == (
            self.ifname, self.address, self.prefix, self.gateway)


class DynoRootError(OSError):
    """A step of making the dyno's root was refused: the message names the step, then the call
    and the kernel's reason (``the overlay root: mount('overlay', ...): Invalid argument``)."""

    def __init__(self, step: str, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        if cause.filename is not None:
            reason += f": {cause.filename!r}"
        super().__init__(cause.errno, f"{step}: {reason}")
        self.step = step


def join_cgroup(spec: DynoSpec) -> None:
    for procs in spec.cgroup_procs:
        with open(procs, "w") as f:
            f.write("0")  # "0" is the writer itself, whatever PID namespace it sees


# Each function below names its current step in a local before each call and, in one handler,
# turns a refusal into a DynoRootError naming that step: a store per step, nothing per call.

def make_root(spec: DynoSpec, k: Syscalls = LINUX) -> str:
    """Mount the dyno's root under spec.mnt (in this mount namespace only) and return it."""
    prepare_root(spec.mnt, spec.tmpfs_mb, k)
    return finish_root(spec, k)


# The aside names, in the dyno's tmpfs, of what prepare_root makes before the root exists.
PROC_ASIDE = "proc"
DEV_ASIDE = "dev"


def prepare_root(mnt: str, tmpfs_mb: int, k: Syscalls = LINUX) -> None:
    """The part of a dyno's root that no spec decides: its tmpfs at ``mnt`` (the overlay's upper
    and work dirs), and its /proc and /dev, made aside in the tmpfs and moved in by finish_root.

    A warm dyno makes this while it waits for its spec, so a start from the pool is left with the
    layers, the overlay and the two moves. A cold dyno makes it the same way, right before the
    rest: a warm dyno that got its spec has exactly the mounts a cold one has.
    """
    step = "making host mounts reach in but never out (MS_SLAVE on /)"
    try:
        k.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
        step = "the dyno's tmpfs"
        k.mount("tmpfs", mnt, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, f"size={tmpfs_mb}m,mode=755")
        # Every layer is bound into the tmpfs and the overlay is given paths relative to it: the
        # dyno's /proc/self/mountinfo shows its options, and "lowerdir=l0:l1,upperdir=upper" says
        # nothing of where the state dir, the slug or the stack live on the host.
        k.chdir(mnt)
        for d in ("upper", "work", "root"):
            k.mkdir(d)
        step = "/proc"
        proc = os.path.join(mnt, PROC_ASIDE)
        k.mkdir(proc)
        k.mount("proc", proc, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        for name in MASKED_FILES:
            step = f"masking /proc/{name}"
            path = os.path.join(proc, name)
            if k.exists(path):
                k.mount("/dev/null", path, None, sc.MS_BIND)
        for name in READ_ONLY_PROC:
            step = f"/proc/{name} read-only"
            path = os.path.join(proc, name)
            if k.isdir(path):
                k.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
                k.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID)
    except OSError as exc:
        raise DynoRootError(step, exc) from None
    make_dev(os.path.join(mnt, DEV_ASIDE), k)


def finish_root(spec: DynoSpec, k: Syscalls = LINUX) -> str:
    """The spec's part of the root, over what prepare_root made at spec.mnt: the layers, the
    overlay, the binds, then /proc and /dev moved in (with everything mounted on them)."""
    root = os.path.join(spec.mnt, "root")
    step = "the app's user namespace"
    try:
        k.chdir(spec.mnt)
        userns = _open_userns(spec, k)
        layers = []
        for i, path in enumerate(spec.lower):
            shown = f"l{i}"
            step = f"layer {shown}"
            k.mkdir(shown)
            if userns is not None and i < len(spec.lower) - 1:  # the stack, last, keeps its owners (root's)
                k.idmapped_bind(path, shown, userns)
            else:
                k.mount(path, shown, None, sc.MS_BIND)
            layers.append(shown)
        step = "the overlay root"
        k.mount("overlay", root, "overlay", 0, f"lowerdir={':'.join(layers)},upperdir=upper,workdir=work")
        for bind in spec.binds:
            step = f"the bind at {bind.target}"
            target = os.path.join(root, bind.target.lstrip("/"))
            if k.isdir(bind.source):
                k.makedirs(target)
            else:  # a file is bound onto a file (copied up into this dyno's own layer if need be)
                k.makedirs(os.path.dirname(target))
                if not k.exists(target):
                    k.create_file(target)
            if userns is not None:
                k.idmapped_bind(bind.source, target, userns)
            else:
                k.mount(bind.source, target, None, sc.MS_BIND | sc.MS_REC)
            if not bind.writable:
                k.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID)
        for name in (PROC_ASIDE, DEV_ASIDE):
            step = f"/{name} moved into the root"
            target = os.path.join(root, name)
            k.makedirs(target)
            k.mount(os.path.join(spec.mnt, name), target, None, sc.MS_MOVE)
        # /proc and /dev were made before the overlay, so their mount ids are older and the
        # dyno's mountinfo (in id order) would list them before "/". A recursive bind of the root
        # onto itself, one call, copies the tree in tree order ("/" first, then the binds, /proc
        # and /dev with what is on them), as a root built in that order lists it; the pivot
        # enters the copy and the originals go with the host's root.
        step = "the root bound onto itself"
        k.mount(root, root, None, sc.MS_BIND | sc.MS_REC)
    except OSError as exc:
        raise DynoRootError(step, exc) from None
    if userns is not None:
        k.close(userns)
    return root


def _open_userns(spec: DynoSpec, k: Syscalls) -> int | None:
    if spec.idmap is None:
        return None
    if not spec.userns_path:
        raise RuntimeError("an id-mapped dyno without the spawner's user namespace")
    return k.open_readonly(spec.userns_path)


def make_dev(dev: str, k: Syscalls = LINUX) -> None:
    step = "/dev"
    try:
        k.makedirs(dev)
        k.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "size=64k,mode=755")
        for name in DEVICES:
            step = f"/dev/{name}"
            node = os.path.join(dev, name)
            k.create_file(node)
            k.mount(f"/dev/{name}", node, None, sc.MS_BIND)
        step = "/dev/pts"
        pts = os.path.join(dev, "pts")
        k.mkdir(pts)
        k.mount("devpts", pts, "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
        k.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
        step = "/dev/shm"
        shm = os.path.join(dev, "shm")
        k.mkdir(shm)
        k.mount("tmpfs", shm, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777,size=64m")
        step = "/dev's links to /proc/self/fd"
        for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            k.symlink(target, os.path.join(dev, link))
    except OSError as exc:
        raise DynoRootError(step, exc) from None


def write_identity(spec: DynoSpec) -> None:
    """/etc/hostname and /etc/hosts naming this dyno (the writes land in its own upper layer).

    Without its own name in /etc/hosts, anything that resolves the hostname (Python's
    http.server calls getfqdn at bind) waits on a DNS server a dyno may not reach.
    """
    address = (spec.net or {}).get("address")
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append(f"{address or '127.0.1.1'}\t{spec.hostname}")
    with open("/etc/hosts", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open("/etc/hostname", "w") as f:
        f.write(spec.hostname + "\n")
    if spec.idmap is not None:
        _rename_dyno_user(spec.uid, spec.gid)


def _rename_dyno_user(uid: int, gid: int) -> None:
    """The stack's ``dyno`` user and group, renumbered to the app's uid/gid in this dyno's own
    /etc/passwd and /etc/group (its upper layer): whoami, id and ~ keep their meaning."""
    for path, fields in (("/etc/passwd", {2: uid, 3: gid}), ("/etc/group", {2: gid})):
        with open(path) as f:
            lines = f.read().splitlines()
        for n, line in enumerate(lines):
            parts = line.split(":")
            if parts[0] == "dyno" and len(parts) > max(fields):
                for index, value in fields.items():
                    parts[index] = str(value)
                lines[n] = ":".join(parts)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


def mount_own_cgroups(mounts: list[CgroupMount], k: Syscalls = LINUX) -> None:
    """The dyno's own cgroup, read-only, at /sys/fs/cgroup (after its cgroup namespace is made).

    /sys is otherwise absent: a small tmpfs holds just fs/cgroup, so nothing of the host's sysfs
    shows. Inside the cgroup namespace each mount's root is the dyno's own group.
    """
    if not mounts:
        return
    ro = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    step = "/sys"
    try:
        k.makedirs("/sys")
        k.mount("tmpfs", "/sys", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "size=16k,mode=755")
        base = "/sys/fs/cgroup"
        k.makedirs(base)
        for m in mounts:
            step = f"the cgroup {m.name or m.fstype}"
            if m.fstype == "cgroup2":
                k.mount("cgroup2", base, "cgroup2", ro)
                continue
            target = os.path.join(base, m.name)
            k.mkdir(target)
            k.mount("cgroup", target, "cgroup", ro, m.options)
            for alias in m.aliases:
                k.symlink(m.name, os.path.join(base, alias))
        step = "/sys read-only"
        k.mount(None, "/sys", None, sc.MS_REMOUNT | ro, "size=16k,mode=755")
    except OSError as exc:
        raise DynoRootError(step, exc) from None


def enter_root(root: str, k: Syscalls = LINUX) -> None:
    step = "pivot_root into the dyno's root"
    try:
        k.chdir(root)
        k.pivot_root(".", ".")  # stack the old root under the new one, then detach it
        step = "detaching the host's root"
        k.umount2(".", sc.MNT_DETACH)
        k.chdir("/")
    except OSError as exc:
        raise DynoRootError(step, exc) from None


def drop_privileges(spec: DynoSpec) -> None:
    become_user(spec.uid, spec.gid, (spec.nofile, spec.nofile))


def become_user(uid: int, gid: int, nofile: tuple[int, int]) -> None:
    """The app's uid and gid, no capabilities (bounding set too), no_new_privs: a dyno's process,
    and an exec session into one (dynod.linux.dyno_exec) alike."""
    resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for cap in range(prctl.CAP_LAST_CAP + 1):
        try:
            prctl.capbset_drop(cap)
        except (OSError, ValueError):
            pass  # a capability this kernel does not know
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # without keepcaps this clears the permitted and effective sets
    prctl.set_no_new_privs(1)


def seccomp_program(spec: DynoSpec, default: sc.SeccompProgram | None) -> sc.SeccompProgram | None:
    if spec.seccomp == "unconfined":
        return None
    if spec.seccomp != "default":
        raise ValueError(f"unknown seccomp profile {spec.seccomp!r} (default or unconfined)")
    if default is None:
        raise RuntimeError("the spawner has no compiled seccomp profile")
    return default


def prepare_dyno(mnt: str, tmpfs_mb: int) -> None:
    """What a warm dyno does before its spec: its own namespaces and the spec-free part of its
    root (prepare_root); become_dyno(prepared=True) does the rest once the spec has come."""
    sc.unshare(NAMESPACES)  # the PID and network namespaces came with the fork
    prepare_root(mnt, tmpfs_mb)


def prepare_network(net: PreparedNet, wired_fd: int) -> bool:
    """A warm dyno's network and cgroup namespace, made once dynod says it is wired (one byte
    ``w`` on the go pipe: its cgroups joined, its veth in), so that a start from the pool does
    neither. False: dynod gave up on it before that (EOF)."""
    if os.read(wired_fd, 1) != b"w":
        return False
    # It is in its warm cgroups now; renamed to the dyno's at its start, they stay the groups
    # this namespace is rooted at.
    sc.unshare(sc.CLONE_NEWCGROUP)
    netconf.configure(net.ifname, net.address, net.prefix, net.gateway)
    return True


def become_dyno(spec: DynoSpec, go_fd: int, *, seccomp: sc.SeccompProgram | None = None,
                cgroup_mounts: list[CgroupMount] | None = None, prepared: bool = False,
                networked: bool = False) -> None:
    """Everything between fork and exec. Raises on any failure; never returns on success.

    ``seccomp`` is the spawner's compiled default profile, ``cgroup_mounts`` what to mount at
    /sys/fs/cgroup: both worked out once in the spawner, not per dyno. ``prepared``: a warm dyno
    that ran prepare_dyno for this spec's mnt and tmpfs size (the spawner checked both at assign);
    ``networked``: one that ran prepare_network for this spec's net (checked the same way).
    """
    program = seccomp_program(spec, seccomp)  # an unknown profile fails before anything is made
    join_cgroup(spec)
    if prepared:
        root = finish_root(spec)
    else:
        sc.unshare(NAMESPACES)  # the PID and network namespaces came with the fork
        root = make_root(spec)
    enter_root(root)
    sc.sethostname(spec.hostname)
    write_identity(spec)
    # The host adds our veth in the meantime; one byte means "wired", EOF means "give up".
    if os.read(go_fd, 1) != b"g":
        raise RuntimeError("dynod withdrew the dyno before it started")
    os.close(go_fd)
    if not networked:
        # Only now is the dyno surely in its own cgroup: its cgroup namespace is rooted there.
        sc.unshare(sc.CLONE_NEWCGROUP)
    mount_own_cgroups(cgroup_mounts or [])
    if not networked:
        net = spec.net or {}
        netconf.configure(net.get("ifname"), net.get("address"), net.get("prefix", 24), net.get("gateway"))
    drop_privileges(spec)
    os.chdir(spec.cwd if os.path.isdir(spec.cwd) else "/")
    if program is not None:
        program.load()  # last: everything above may use what the profile denies (mount, unshare)
    os.execvpe(spec.argv[0], spec.argv, spec.env)
