"""The Syscalls interface: the real one is the kernel's calls as they are, the fake matches it."""

from __future__ import annotations

import errno
import inspect
import os
from pathlib import Path

import pytest

from dynod.linux import dyno_exec
from dynod.linux import syscalls as sc

from .fake_syscalls import PARAMETERS, RecordingSyscalls


def interface_methods() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(sc.Syscalls).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def test_the_fake_has_every_call_of_the_interface_with_the_same_parameters() -> None:
    methods = interface_methods()
    assert set(methods) == set(PARAMETERS)
    for name, signature in methods.items():
        fake = inspect.signature(getattr(RecordingSyscalls, name))
        assert list(fake.parameters) == list(signature.parameters), name
        assert tuple(signature.parameters)[1:] == PARAMETERS[name], name


def test_the_real_one_is_the_kernel_calls_themselves_not_wrappers() -> None:
    """No per-call cost on the spawner's fork path beyond the attribute lookup sc.mount had."""
    assert set(interface_methods()) <= set(dir(sc.LINUX))
    for name in ("unshare", "setns", "mount", "umount2", "pivot_root", "sethostname", "idmapped_bind"):
        assert getattr(sc.LINUX, name) is getattr(sc, name)
    assert sc.LINUX.chdir is os.chdir and sc.LINUX.mkdir is os.mkdir and sc.LINUX.close is os.close


def test_the_real_filesystem_calls_do_what_the_fake_models(tmp_path: Path) -> None:
    k = sc.LINUX
    base = os.fspath(tmp_path)
    k.makedirs(f"{base}/a/b")
    k.makedirs(f"{base}/a/b")  # there already is fine
    k.create_file(f"{base}/a/f")
    k.create_file(f"{base}/a/f")  # so is an existing file
    k.symlink("b", f"{base}/a/l")
    assert k.isdir(f"{base}/a/b") and k.exists(f"{base}/a/f") and not k.isdir(f"{base}/a/f")
    with pytest.raises(FileExistsError):
        k.mkdir(f"{base}/a/b")
    fd = k.open_readonly(f"{base}/a/f")
    assert not os.get_inheritable(fd)
    k.close(fd)


def test_a_failed_real_call_says_which_call_and_why() -> None:
    with pytest.raises(OSError) as caught:
        sc.LINUX.setns(-1, sc.CLONE_NEWNS)
    assert caught.value.errno == errno.EBADF
    assert str(caught.value) == f"[Errno {errno.EBADF}] setns(-1, {sc.CLONE_NEWNS:#x}): Bad file descriptor"


def test_an_exec_session_joins_the_mount_namespace_last_and_closes_each_fd() -> None:
    k = RecordingSyscalls()
    namespaces = {name: k.open_readonly(f"/proc/42/ns/{name}") for name in ("mnt", "cgroup", "ipc", "uts", "net")}
    dyno_exec.join_namespaces(namespaces, k)
    joined = [c for c in k.calls if c[0] in ("setns", "close")]
    fd = namespaces
    assert joined == [
        ("setns", fd["net"], sc.CLONE_NEWNET), ("close", fd["net"]),
        ("setns", fd["uts"], sc.CLONE_NEWUTS), ("close", fd["uts"]),
        ("setns", fd["ipc"], sc.CLONE_NEWIPC), ("close", fd["ipc"]),
        ("setns", fd["cgroup"], sc.CLONE_NEWCGROUP), ("close", fd["cgroup"]),
        ("setns", fd["mnt"], sc.CLONE_NEWNS), ("close", fd["mnt"]),
    ]
    assert not k.open_fds


def test_a_refused_setns_stops_before_the_mount_namespace() -> None:
    k = RecordingSyscalls()
    namespaces = {name: k.open_readonly(name) for name in ("mnt", "cgroup", "ipc", "uts", "net")}
    k.fail("setns", errno.EINVAL, nstype=sc.CLONE_NEWCGROUP)
    with pytest.raises(OSError, match="setns: Invalid argument"):
        dyno_exec.join_namespaces(namespaces, k)
    assert not any(c[0] == "setns" and c[2] == sc.CLONE_NEWNS for c in k.calls)
