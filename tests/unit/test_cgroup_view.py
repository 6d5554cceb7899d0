"""Which cgroup hierarchies a dyno mounts to see its own limits (pure: mountinfo text in)."""

from __future__ import annotations

from dynod.linux.cgroups.view import CgroupMount, dyno_cgroup_mounts

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

SYSTEMD_V1 = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
"""

PURE_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"


def test_hybrid_host_gets_the_v1_hierarchies_a_dyno_is_placed_in() -> None:
    mounts = dyno_cgroup_mounts(HYBRID)
    assert mounts == [CgroupMount("cgroup", "cpu", "cpu"), CgroupMount("cgroup", "memory", "memory"),
                      CgroupMount("cgroup", "pids", "pids")]


def test_co_mounted_controllers_keep_the_host_option_set_and_get_aliases() -> None:
    cpu = dyno_cgroup_mounts(SYSTEMD_V1)[0]
    assert cpu == CgroupMount("cgroup", "cpu,cpuacct", "cpu,cpuacct", ("cpu",))
    assert CgroupMount.from_json(cpu.to_json()) == cpu


def test_pure_v2_host_gets_the_unified_hierarchy() -> None:
    assert dyno_cgroup_mounts(PURE_V2) == [CgroupMount("cgroup2", "", "")]


def test_no_cgroups_mounted_means_no_view() -> None:
    assert dyno_cgroup_mounts("22 1 0:5 / /proc rw - proc proc rw\n") == []
