from dynod.linux.cgroups.paths import parse_mounts

HYBRID_MOUNTINFO = """\
30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
"""
HYBRID_CGROUP = "8:pids:/svc\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice\n"


def test_hybrid_host_uses_each_v1_hierarchy_where_this_process_sits() -> None:
    mounts = parse_mounts(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert mounts.v1["memory"].directory(mounts.v1["memory"].own_path) == "/sys/fs/cgroup/memory/process_api/abc"
    assert mounts.v1["pids"].directory("/svc") == "/sys/fs/cgroup/pids/svc"
    assert mounts.v1["cpu"].mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert mounts.v2 is not None and mounts.v2.own_path == "/user.slice"


def test_pure_v2_host_has_no_v1_hierarchies() -> None:
    mounts = parse_mounts("40 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
                          "0::/system.slice/dynod.service\n")
    assert mounts.v1 == {}
    assert mounts.v2 is not None
    assert mounts.v2.directory(mounts.v2.own_path) == "/sys/fs/cgroup/system.slice/dynod.service"


def test_a_mount_whose_root_is_not_slash_is_translated() -> None:
    # Inside a container the cgroup mount shows a sub-tree at the mountpoint.
    mounts = parse_mounts("40 23 0:26 /ctr /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/ctr/app\n")
    assert mounts.v2 is not None
    assert mounts.v2.directory("/ctr/app") == "/sys/fs/cgroup/app"
