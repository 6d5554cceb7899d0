"""Where a dyno is born: the one cgroup2 group its clone3 can make it in, the v1 moves left."""

from __future__ import annotations

import pytest

from dynod.linux.cgroups.birth import Birth, birth, favors_dynamic_moves
from dynod.linux.cgroups.paths import CgroupMounts, Hierarchy

HYBRID = CgroupMounts(
    v1={c: Hierarchy(f"/sys/fs/cgroup/{c}", "/", "/") for c in ("memory", "pids", "cpu")},
    v2=Hierarchy("/sys/fs/cgroup/unified", "/", "/"),
)
PURE_V2 = CgroupMounts(v2=Hierarchy("/sys/fs/cgroup", "/", "/dynod.service"))


def test_a_pure_v2_dyno_is_born_in_its_group_with_no_move_left() -> None:
    procs = ["/sys/fs/cgroup/dynod.service/dynod/web.1/cgroup.procs"]
    assert birth(procs, PURE_V2) == Birth("/sys/fs/cgroup/dynod.service/dynod/web.1", ())


def test_a_hybrid_dyno_keeps_its_v1_moves() -> None:
    procs = [f"/sys/fs/cgroup/{c}/dynod/web.1/cgroup.procs" for c in ("memory", "pids", "cpu")]
    # /sys/fs/cgroup/memory is not under the cgroup2 mount /sys/fs/cgroup/unified: all three stay writes.
    assert birth(procs, HYBRID) == Birth(None, tuple(procs))


def test_a_hybrid_dyno_with_a_v2_group_too_is_born_there_and_moved_in_v1() -> None:
    v1 = "/sys/fs/cgroup/memory/dynod/web.1/cgroup.procs"
    assert birth([v1, "/sys/fs/cgroup/unified/dynod/web.1/cgroup.procs"], HYBRID) == \
        Birth("/sys/fs/cgroup/unified/dynod/web.1", (v1,))


def test_a_path_that_only_starts_like_the_v2_mount_is_not_in_it() -> None:
    procs = ["/sys/fs/cgroup/unified2/web.1/cgroup.procs"]
    assert birth(procs, HYBRID) == Birth(None, tuple(procs))


def test_no_cgroup2_mount_means_a_plain_fork_and_every_move() -> None:
    procs = ["/sys/fs/cgroup/memory/web.1/cgroup.procs"]
    assert birth(procs, CgroupMounts(v1=HYBRID.v1)) == Birth(None, tuple(procs))
    assert birth([], PURE_V2) == Birth(None, ())


def test_two_v2_groups_or_a_file_that_is_no_procs_file_are_refused() -> None:
    with pytest.raises(ValueError, match="two cgroup2 groups"):
        birth(["/sys/fs/cgroup/a/cgroup.procs", "/sys/fs/cgroup/b/cgroup.procs"], PURE_V2)
    with pytest.raises(ValueError, match="no cgroup.procs file"):
        birth(["/sys/fs/cgroup/a/memory.max"], PURE_V2)


MOUNTINFO = """\
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw{v2}
40 22 0:40 / /mnt/favordynmods rw,relatime shared:20 - tmpfs favordynmods rw
"""


def test_favordynmods_is_seen_on_any_cgroup_mount_and_only_there() -> None:
    assert not favors_dynamic_moves(MOUNTINFO.format(v2=""))  # a tmpfs named so does not count
    assert favors_dynamic_moves(MOUNTINFO.format(v2=",favordynmods"))
    v1 = MOUNTINFO.format(v2="").replace("cgroup rw,memory", "cgroup rw,memory,favordynmods")
    assert favors_dynamic_moves(v1)
    assert not favors_dynamic_moves(MOUNTINFO.format(v2=",nsdelegate,memory_recursiveprot"))
