"""ctypes bindings for the syscalls CPython 3.11 lacks (unshare, setns, mount, pivot_root, ...).

Python 3.12 added os.unshare/os.setns; until dynod can require it, libc is called directly.
Each wrapper raises OSError with the errno and the call's arguments, so a failed dyno start says
which mount or namespace refused.

``Syscalls`` is the seam between the making of a dyno (dynod.linux.dyno_init) and the kernel: the
namespace, mount and filesystem calls that code makes, as one interface. ``LINUX`` is the real
one (these functions, as they are: no extra work on the fork path); the unit tests hand in a
recording fake instead (tests/unit/fake_syscalls.py) and assert the exact sequence of mounts a
dyno's root is made of, without root.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import platform
import struct
import termios
from typing import Protocol

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19

MNT_DETACH = 2

# pivot_root has no libc wrapper; its number differs by architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}.get(platform.machine(), 155)

IN_MODIFY = 0x00000002
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({fd}, {nstype:#x})")


def mount(source: str | None, target: str | os.PathLike[str], fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount({source!r}, {os.fspath(target)!r}, {fstype!r}, {flags:#x}, {data!r})",
    )


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount2({os.fspath(target)!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    result = _libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old))
    _check(result, f"pivot_root({new_root!r}, {put_old!r})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


SYNC_FILE_RANGE_WRITE = 2
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """sync_file_range(SYNC_FILE_RANGE_WRITE): start writing ``fd``'s dirty pages in that range to
    disk without waiting for them (nor making anything durable: fsync still does that), so that a
    file written over a while reaches its fsync with most of it already written."""
    _check(_libc.sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE),
           f"sync_file_range({fd}, {offset}, {nbytes})")


def inotify_init(flags: int = IN_NONBLOCK | IN_CLOEXEC) -> int:
    return _check(_libc.inotify_init1(flags), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return _check(_libc.inotify_add_watch(fd, _b(path), mask), f"inotify_add_watch({path!r})")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompProgram:
    """A compiled seccomp BPF program, held ready to load in a forked child with one prctl.

    The buffer and the sock_fprog pointing at it are made once, in the parent; a child inherits
    them with its memory, so loading costs the syscall alone.
    """

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8:
            raise ValueError(f"a BPF program is a whole number of 8-byte instructions, not {len(bpf)} bytes")
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._fprog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buffer))
        self.instructions = len(bpf) // 8

    def load(self) -> None:
        """Filter this thread's syscalls from now on (needs no_new_privs, or CAP_SYS_ADMIN)."""
        _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._fprog), 0, 0),
               "prctl(PR_SET_SECCOMP)")


# The new mount API (Linux 5.2+; MOUNT_ATTR_IDMAP 5.12+): the same numbers on x86_64 and aarch64.
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
CLONE_NEWUSER = 0x10000000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def idmapped_bind(source: str, target: str, userns_fd: int) -> None:
    """Bind ``source`` (recursively) at ``target``, its file owners shown through the id maps of
    the user namespace ``userns_fd`` (an idmapped mount: nothing on disk changes)."""
    fd = _check(_libc.syscall(_SYS_OPEN_TREE, AT_FDCWD, _b(source), OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE),
                f"open_tree({source!r})")
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(_libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr),
                             ctypes.sizeof(attr)), f"mount_setattr({source!r}, MOUNT_ATTR_IDMAP)")
        _check(_libc.syscall(_SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH),
               f"move_mount({source!r} -> {target!r})")
    finally:
        os.close(fd)


_SYS_CLONE3 = 435  # one number on every architecture (the syscall tables were unified before it)
CLONE_INTO_CGROUP = 0x200000000
# The GIL stays held across the call (PyDLL), so the child wakes up holding it, as after fork().
_pylibc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_pylibc.syscall.restype = ctypes.c_long


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


def clone3(flags: int, cgroup_fd: int = -1) -> int:
    """fork() by clone3(2): the child born in new namespaces (``flags``) and, given the fd of a
    cgroup2 directory, in that cgroup (CLONE_INTO_CGROUP: no cgroup.procs write after the fork, so
    no wait on the cgroup lock either). 0 in the child, its pid in the parent, as os.fork; Python's
    own before/after-fork work is done around it as os.fork does it. For a single-threaded caller
    (the spawner): nothing of glibc's fork bookkeeping runs, and the child must exec."""
    args = _CloneArgs(flags=flags | (CLONE_INTO_CGROUP if cgroup_fd >= 0 else 0),
                      exit_signal=17, cgroup=max(cgroup_fd, 0))  # 17: SIGCHLD, as fork's child sends
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _pylibc.syscall(_SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3({flags:#x}, cgroup fd {cgroup_fd}): {os.strerror(err)}")
    return pid


def _makedirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def _create_file(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _open_readonly(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


class Syscalls(Protocol):
    """What the making of a dyno's root asks of the kernel, in the order it asks.

    The filesystem calls are here with the mounts because they interleave: a mount point is made
    just before something is mounted on it, often inside what was mounted a moment before.
    Relative paths are relative to the directory of the last ``chdir``.
    """

    def unshare(self, flags: int) -> None: ...
    def setns(self, fd: int, nstype: int) -> None: ...
    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None: ...
    def umount2(self, target: str, flags: int = 0) -> None: ...
    def pivot_root(self, new_root: str, put_old: str) -> None: ...
    def sethostname(self, name: str) -> None: ...
    def idmapped_bind(self, source: str, target: str, userns_fd: int) -> None: ...
    def chdir(self, path: str) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def makedirs(self, path: str) -> None: ...  # and its parents; there already is fine
    def create_file(self, path: str) -> None: ...  # empty, to bind a file onto
    def symlink(self, target: str, link: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def isdir(self, path: str) -> bool: ...
    def open_readonly(self, path: str) -> int: ...
    def close(self, fd: int) -> None: ...


class LinuxSyscalls:
    """The kernel itself: each method is the module's function or the os call, not a wrapper
    around it, so going through the seam costs one attribute lookup, as ``sc.mount`` did."""

    unshare = staticmethod(unshare)
    setns = staticmethod(setns)
    mount = staticmethod(mount)
    umount2 = staticmethod(umount2)
    pivot_root = staticmethod(pivot_root)
    sethostname = staticmethod(sethostname)
    idmapped_bind = staticmethod(idmapped_bind)
    chdir = staticmethod(os.chdir)
    mkdir = staticmethod(os.mkdir)
    makedirs = staticmethod(_makedirs)
    create_file = staticmethod(_create_file)
    symlink = staticmethod(os.symlink)
    exists = staticmethod(os.path.exists)
    isdir = staticmethod(os.path.isdir)
    open_readonly = staticmethod(_open_readonly)
    close = staticmethod(os.close)


LINUX: Syscalls = LinuxSyscalls()


def set_window_size(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on a pty master: the attached client's terminal was resized."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
