"""The mount sequence of a dyno's root, against a recording kernel (no root needed).

The real sequence runs in tests/integration (test_linux.py, test_dynos.py, test_isolation_*.py);
these pin its order and arguments, and what a refused step says.
"""

from __future__ import annotations

import errno
import os

import pytest

from dynod.linux import syscalls as sc
from dynod.linux.cgroups.view import CgroupMount
from dynod.linux.dyno_init import (
    DEVICES,
    MASKED_FILES,
    Bind,
    DynoRootError,
    DynoSpec,
    enter_root,
    finish_root,
    make_dev,
    make_root,
    mount_own_cgroups,
    prepare_root,
)

from .fake_syscalls import RecordingSyscalls

MNT = "/state/dynos/web.1"
SLUG = "/state/slugs/abc"
STACK = "/stacks/heroku-24"
ROOT = f"{MNT}/root"
# /proc and /dev are made aside in the dyno's tmpfs (a warm dyno makes them before its spec),
# then moved into the root.
PROC = f"{MNT}/proc"
DEV = f"{MNT}/dev"
RO_BIND = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID
CGROUP_RO = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
# A kernel without latency_stats (CONFIG_LATENCYTOP off) and without /proc/bus: both are skipped.
PROC_FILES = [name for name in MASKED_FILES if name != "latency_stats"] + ["cpuinfo", "meminfo"]
PROC_DIRS = ["sys", "irq", "fs", "self"]
HYBRID = [CgroupMount("cgroup", "cpu,cpuacct", "cpu,cpuacct", ("cpu",)), CgroupMount("cgroup", "memory", "memory"),
          CgroupMount("cgroup", "pids", "pids")]


def spec(**changes: object) -> DynoSpec:
    base = DynoSpec(id="app.web.1", hostname="web.1", argv=["/bin/true"], env={}, lower=[SLUG, STACK], mnt=MNT,
                    cgroup_procs=[], uid=20001, gid=20001, tmpfs_mb=512,
                    binds=[Bind("/state/addons/pg.sock", "/run/pg.sock", writable=True),
                           Bind("/state/shared/certs", "/etc/ssl/app")])
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def kernel() -> RecordingSyscalls:
    return RecordingSyscalls(
        dirs=[MNT, f"{SLUG}/app", f"{STACK}/etc", f"{STACK}/proc", f"{STACK}/usr/bin", "/state/shared/certs", "/dev"],
        files=["/state/addons/pg.sock", *(f"/dev/{name}" for name in DEVICES)],
        proc=PROC_FILES, proc_dirs=PROC_DIRS)


def expected_root_mounts(*, idmapped: bool = False, userns: int = 100) -> list[tuple[object, ...]]:
    layers = ([("idmapped_bind", SLUG, "l0", userns)] if idmapped else [("mount", SLUG, "l0", None, sc.MS_BIND, None)])
    pg, certs = f"{ROOT}/run/pg.sock", f"{ROOT}/etc/ssl/app"
    if idmapped:
        binds = [("idmapped_bind", "/state/addons/pg.sock", pg, userns),
                 ("idmapped_bind", "/state/shared/certs", certs, userns)]
    else:
        binds = [("mount", "/state/addons/pg.sock", pg, None, sc.MS_BIND | sc.MS_REC, None),
                 ("mount", "/state/shared/certs", certs, None, sc.MS_BIND | sc.MS_REC, None)]
    return [
        ("mount", None, "/", None, sc.MS_REC | sc.MS_SLAVE, None),
        ("mount", "tmpfs", MNT, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=512m,mode=755"),
        *spec_free_mounts(),
        *layers,
        ("mount", STACK, "l1", None, sc.MS_BIND, None),  # the stack keeps its owners, idmapped or not
        ("mount", "overlay", ROOT, "overlay", 0, "lowerdir=l0:l1,upperdir=upper,workdir=work"),
        binds[0],  # writable: no remount
        binds[1],
        ("mount", None, certs, None, RO_BIND, None),  # read-only right after its bind
        ("mount", PROC, f"{ROOT}/proc", None, sc.MS_MOVE, None),  # with the masks and read-only binds on it
        ("mount", DEV, f"{ROOT}/dev", None, sc.MS_MOVE, None),
        # Copied in tree order, so that the dyno's mountinfo lists "/" first, as it did when
        # /proc and /dev were made after the overlay.
        ("mount", ROOT, ROOT, None, sc.MS_BIND | sc.MS_REC, None),
    ]


def spec_free_mounts() -> list[tuple[object, ...]]:
    """/proc and /dev as prepare_root makes them, aside in the tmpfs."""
    return [
        ("mount", "proc", PROC, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None),
        *(("mount", "/dev/null", f"{PROC}/{name}", None, sc.MS_BIND, None) for name in PROC_FILES[:5]),
        *(call for name in ("sys", "irq", "fs") for call in (
            ("mount", f"{PROC}/{name}", f"{PROC}/{name}", None, sc.MS_BIND | sc.MS_REC, None),
            ("mount", None, f"{PROC}/{name}", None, RO_BIND, None))),
        ("mount", "tmpfs", DEV, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "size=64k,mode=755"),
        *(("mount", f"/dev/{name}", f"{DEV}/{name}", None, sc.MS_BIND, None) for name in DEVICES),
        ("mount", "devpts", f"{DEV}/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"),
        ("mount", "tmpfs", f"{DEV}/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777,size=64m"),
    ]


def test_the_root_is_mounted_in_exactly_this_order() -> None:
    k = kernel()
    assert make_root(spec(), k) == ROOT
    assert k.mounts() == expected_root_mounts()
    # Host mounts may reach into the dyno, the dyno's never out: before anything is mounted.
    assert k.calls[0] == ("mount", None, "/", None, sc.MS_REC | sc.MS_SLAVE, None)


def test_the_overlay_lists_its_layers_top_first_and_relative_to_the_tmpfs() -> None:
    k = RecordingSyscalls(dirs=[MNT, "/slug/app", "/layer/bin", f"{STACK}/usr", "/dev"],
                          files=[f"/dev/{name}" for name in DEVICES], proc=[], proc_dirs=[])
    prepare_root(MNT, 512, k)
    start = len(k.mounts())
    k.fail("mount", errno.ENOENT, flags=sc.MS_MOVE)  # stop after the overlay: only its layers matter here
    with pytest.raises(DynoRootError, match="/proc moved into the root"):
        finish_root(spec(lower=["/slug", "/layer", STACK], binds=[]), k)
    assert k.mounts()[start:start + 4] == [
        ("mount", "/slug", "l0", None, sc.MS_BIND, None),
        ("mount", "/layer", "l1", None, sc.MS_BIND, None),
        ("mount", STACK, "l2", None, sc.MS_BIND, None),
        ("mount", "overlay", ROOT, "overlay", 0, "lowerdir=l0:l1:l2,upperdir=upper,workdir=work"),
    ]
    # The layers, upper and work are made in the dyno's tmpfs, named relative to it.
    assert ("chdir", MNT) in k.calls
    relative = [c[1] for c in k.calls if c[0] == "mkdir" and not c[1].startswith("/")]
    assert relative == ["upper", "work", "root", "l0", "l1", "l2"]
    # What the overlay shows is the union of its layers.
    assert k.isdir(f"{ROOT}/app") and k.isdir(f"{ROOT}/bin") and k.isdir(f"{ROOT}/usr")


def test_a_root_prepared_before_its_spec_is_mounted_exactly_as_a_cold_one() -> None:
    """A warm dyno runs prepare_root while it waits and finish_root once its spec has come: the
    same calls, in the same order, as make_root's in a cold dyno, and /proc and /dev end up in the
    root with everything mounted on them, nothing left aside."""
    cold, warm = kernel(), kernel()
    make_root(spec(), cold)
    prepare_root(MNT, 512, warm)
    assert not any(c[0] == "mount" and c[2] in ("l0", ROOT) for c in warm.calls)  # nothing of the spec's yet
    assert finish_root(spec(), warm) == ROOT
    assert warm.calls == cold.calls
    assert f"{ROOT}/proc/kcore" in warm.mount_points and f"{ROOT}/dev/pts" in warm.mount_points
    assert not any(p == PROC or p.startswith(f"{PROC}/") or p == DEV or p.startswith(f"{DEV}/")
                   for p in warm.mount_points)
    assert warm.kinds[f"{ROOT}/dev/ptmx"] == "link" and f"{DEV}/ptmx" not in warm.kinds


def test_a_root_whose_proc_was_never_prepared_is_refused_at_the_move() -> None:
    k = kernel()
    k.mount("tmpfs", MNT, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=512m,mode=755")
    for d in ("upper", "work", "root"):
        k.mkdir(f"{MNT}/{d}")
    k.mkdir(PROC)  # a directory, not a proc mount: MS_MOVE has nothing to move
    with pytest.raises(DynoRootError, match=r"^\[Errno 22\] /proc moved into the root: mount: Invalid argument$"):
        finish_root(spec(binds=[]), k)


def test_an_idmapped_dyno_sees_its_slug_and_binds_through_the_userns_and_closes_it() -> None:
    k = kernel()
    make_root(spec(idmap={"uid": [[0, 0, 1]], "gid": [[0, 0, 1]]}, userns_path="/proc/77/fd/5"), k)
    assert k.mounts() == expected_root_mounts(idmapped=True, userns=100)
    assert ("open_readonly", "/proc/77/fd/5") in k.calls
    assert k.calls[-1] == ("close", 100) and not k.open_fds


def test_an_idmapped_dyno_without_the_spawners_userns_is_refused_before_any_layer() -> None:
    k = kernel()
    with pytest.raises(RuntimeError, match="user namespace"):
        make_root(spec(idmap={"uid": [[0, 0, 1]], "gid": [[0, 0, 1]]}, userns_path=""), k)
    assert not any(c[0] == "mount" and c[2] == "l0" for c in k.calls)


def test_a_file_bind_gets_a_file_to_land_on_and_a_directory_bind_a_directory() -> None:
    k = kernel()
    make_root(spec(), k)
    assert ("create_file", f"{ROOT}/run/pg.sock") in k.calls
    assert ("makedirs", f"{ROOT}/etc/ssl/app") in k.calls
    assert k.kinds[f"{ROOT}/run/pg.sock"] == "file" and k.kinds[f"{ROOT}/etc/ssl/app"] == "dir"


def test_dev_holds_the_device_binds_a_private_devpts_and_the_links() -> None:
    k = RecordingSyscalls(dirs=["/r"], files=[f"/dev/{name}" for name in DEVICES])
    make_dev("/r/dev", k)
    assert [c for c in k.changes() if c[0] in ("mount", "symlink")] == [
        ("mount", "tmpfs", "/r/dev", "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "size=64k,mode=755"),
        *(("mount", f"/dev/{name}", f"/r/dev/{name}", None, sc.MS_BIND, None) for name in DEVICES),
        ("mount", "devpts", "/r/dev/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"),
        ("symlink", "pts/ptmx", "/r/dev/ptmx"),  # the dyno's own ptys, never the host's
        ("mount", "tmpfs", "/r/dev/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777,size=64m"),
        ("symlink", "/proc/self/fd", "/r/dev/fd"), ("symlink", "/proc/self/fd/0", "/r/dev/stdin"),
        ("symlink", "/proc/self/fd/1", "/r/dev/stdout"), ("symlink", "/proc/self/fd/2", "/r/dev/stderr"),
    ]


def test_enter_root_pivots_detaches_the_host_and_mounts_the_own_cgroups_read_only_inside() -> None:
    k = kernel()
    root = make_root(spec(), k)
    before = len(k.calls)
    enter_root(root, k)
    mount_own_cgroups(HYBRID, k)
    assert k.calls[before:before + 4] == [("chdir", ROOT), ("pivot_root", ".", "."), ("umount2", ".", sc.MNT_DETACH),
                                    ("chdir", "/")]
    assert k.mounts()[len(expected_root_mounts()):] == [
        ("pivot_root", ".", "."),
        ("umount2", ".", sc.MNT_DETACH),
        ("mount", "tmpfs", "/sys", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "size=16k,mode=755"),
        ("mount", "cgroup", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", CGROUP_RO, "cpu,cpuacct"),
        ("mount", "cgroup", "/sys/fs/cgroup/memory", "cgroup", CGROUP_RO, "memory"),
        ("mount", "cgroup", "/sys/fs/cgroup/pids", "cgroup", CGROUP_RO, "pids"),
        ("mount", None, "/sys", None, sc.MS_REMOUNT | CGROUP_RO, "size=16k,mode=755"),  # /sys itself read-only last
    ]
    assert ("symlink", "cpu,cpuacct", "/sys/fs/cgroup/cpu") in k.calls[before:]
    # After the pivot "/sys" is the dyno's: the fake resolved it inside the new root.
    assert k.kinds[f"{ROOT}/sys/fs/cgroup/memory"] == "dir"


def test_a_pure_v2_host_mounts_the_unified_hierarchy_at_sys_fs_cgroup() -> None:
    k = RecordingSyscalls()
    mount_own_cgroups([CgroupMount("cgroup2", "", "")], k)
    assert k.mounts()[1] == ("mount", "cgroup2", "/sys/fs/cgroup", "cgroup2", CGROUP_RO, None)
    assert k.mounts()[-1][4] == sc.MS_REMOUNT | CGROUP_RO


def test_no_cgroup_mounts_means_no_sys_at_all() -> None:
    k = RecordingSyscalls()
    mount_own_cgroups([], k)
    assert k.calls == []


@pytest.mark.parametrize(("call", "match", "err", "step"), [
    ("mount", {"flags": sc.MS_REC | sc.MS_SLAVE}, errno.EPERM, "making host mounts reach in but never out"),
    ("mount", {"target": MNT}, errno.ENOMEM, "the dyno's tmpfs"),
    ("mkdir", {"path": "upper"}, errno.ENOSPC, "the dyno's tmpfs"),
    ("mount", {"source": STACK}, errno.ENOENT, "layer l1"),
    ("mount", {"fstype": "overlay"}, errno.EINVAL, "the overlay root"),
    ("mount", {"source": "/state/shared/certs"}, errno.ENOENT, "the bind at /etc/ssl/app"),
    ("mount", {"target": f"{ROOT}/etc/ssl/app", "flags": RO_BIND}, errno.EPERM, "the bind at /etc/ssl/app"),
    ("mount", {"fstype": "proc"}, errno.EPERM, "/proc"),
    ("mount", {"target": f"{PROC}/kcore"}, errno.EACCES, "masking /proc/kcore"),
    ("mount", {"target": f"{PROC}/irq", "flags": RO_BIND}, errno.EPERM, "/proc/irq read-only"),
    ("mount", {"target": DEV}, errno.ENOMEM, "/dev"),
    ("mount", {"source": "/dev/urandom"}, errno.ENOENT, "/dev/urandom"),
    ("mount", {"fstype": "devpts"}, errno.EINVAL, "/dev/pts"),
    ("symlink", {"link": f"{DEV}/ptmx"}, errno.EEXIST, "/dev/pts"),
    ("mount", {"target": f"{DEV}/shm"}, errno.ENOMEM, "/dev/shm"),
    ("mount", {"target": f"{ROOT}/dev", "flags": sc.MS_MOVE}, errno.EINVAL, "/dev moved into the root"),
    ("mount", {"source": ROOT}, errno.ENOMEM, "the root bound onto itself"),
])
def test_a_refused_step_is_named_with_the_call_and_nothing_after_it_is_tried(
        call: str, match: dict[str, object], err: int, step: str) -> None:
    k = kernel()
    k.fail(call, err, **match)
    with pytest.raises(DynoRootError) as caught:
        make_root(spec(), k)
    assert caught.value.errno == err
    assert caught.value.step.startswith(step)
    assert str(caught.value) == f"[Errno {err}] {caught.value.step}: {call}: {errno_text(err)}"
    failed = k.calls[-1]
    assert failed[0] == call  # the refused call was the last one made


def errno_text(err: int) -> str:
    return os.strerror(err)


@pytest.mark.parametrize(("call", "match", "step"), [
    ("pivot_root", {}, "pivot_root into the dyno's root"),
    ("umount2", {}, "detaching the host's root"),
])
def test_a_refused_pivot_is_named(call: str, match: dict[str, object], step: str) -> None:
    k = kernel()
    root = make_root(spec(), k)
    k.fail(call, errno.EINVAL, **match)
    with pytest.raises(DynoRootError, match=f"^\\[Errno 22\\] {step}: {call}: Invalid argument$"):
        enter_root(root, k)


def test_a_refused_cgroup_mount_names_the_hierarchy() -> None:
    k = RecordingSyscalls()
    k.fail("mount", errno.EPERM, fstype="cgroup", data="memory")
    with pytest.raises(DynoRootError, match="the cgroup memory: mount: Operation not permitted"):
        mount_own_cgroups(HYBRID, k)
    assert not any(c[0] == "mount" and c[2] == "/sys/fs/cgroup/pids" for c in k.calls)


def test_the_kernel_refuses_what_a_reordered_sequence_would_do() -> None:
    """The fake is strict where the order matters, so the tests above fail on a wrong order."""
    k = RecordingSyscalls(dirs=["/mnt", "/src"])
    with pytest.raises(OSError) as caught:
        k.mount(None, "/mnt/ro", None, RO_BIND)  # remounting a target that is not there
    assert caught.value.errno == errno.ENOENT
    k.mkdir("/mnt/ro")
    with pytest.raises(OSError) as caught:
        k.mount(None, "/mnt/ro", None, RO_BIND)  # read-only before the bind: not a mount point yet
    assert caught.value.errno == errno.EINVAL
    k.mount("/src", "/mnt/ro", None, sc.MS_BIND)
    k.mount(None, "/mnt/ro", None, RO_BIND)
    with pytest.raises(OSError) as caught:
        k.pivot_root("/src", ".")  # not a mount point
    assert caught.value.errno == errno.EINVAL
    with pytest.raises(OSError) as caught:
        k.mkdir("/mnt/ro")
    assert caught.value.errno == errno.EEXIST
    with pytest.raises(TypeError, match="no argument"):
        k.fail("mount", errno.EPERM, options="x")
