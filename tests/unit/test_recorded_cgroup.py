"""A dyno's recorded cgroup (manager.recorded_cgroup): what is written, and which records are
trusted on adoption. Pure: the mounts are parsed from sample /proc text, no cgroup is touched
except the one test that removes an old subtree in a temporary directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dynod.linux.cgroups.paths import parse_mounts
from dynod.linux.cgroups.primer import PRIMER_GROUP
from dynod.linux.cgroups.v1 import CgroupV1Dyno
from dynod.linux.cgroups.v2 import CgroupV2Dyno
from dynod.manager.recorded_cgroup import describe, directories, recorded_dirs, remove_old_subtrees

HYBRID = parse_mounts(
    "35 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    "36 30 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    "37 30 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
    "8:pids:/\n4:memory:/svc\n2:cpu,cpuacct:/\n0::/\n")
PURE_V2 = parse_mounts("40 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/system.slice/dynod.service\n")
ID = "shop.web.1.3f2a9c"
V1_DIRS = {"memory": f"/sys/fs/cgroup/memory/svc/dynod/{ID}", "pids": f"/sys/fs/cgroup/pids/dynod/{ID}",
           "cpu": f"/sys/fs/cgroup/cpu,cpuacct/dynod/{ID}"}


def test_a_v1_group_is_recorded_with_every_hierarchy_and_read_back() -> None:
    text = describe(CgroupV1Dyno(ID, 1, dict(V1_DIRS)))
    assert json.loads(text) == {"v1": V1_DIRS}
    assert recorded_dirs(text, ID, HYBRID) == V1_DIRS
    assert sorted(directories(CgroupV1Dyno(ID, 1, dict(V1_DIRS)))) == sorted(V1_DIRS.values())


def test_a_v2_group_is_recorded_and_read_back() -> None:
    directory = f"/sys/fs/cgroup/other.slice/dynod/{ID}"
    text = describe(CgroupV2Dyno(ID, 1, directory))
    assert recorded_dirs(text, ID, PURE_V2) == {"v2": directory}
    assert directories(CgroupV2Dyno(ID, 1, directory)) == [directory]


def test_no_record_is_none_so_the_lookup_by_name_is_used() -> None:
    assert recorded_dirs("", ID, HYBRID) is None


@pytest.mark.parametrize("record", [
    "not json", "[]", "{}", '{"v1": {}, "v2": "/x"}', '{"v1": "/sys/fs/cgroup/memory/dynod/x"}',
    json.dumps({"v1": {"pids": V1_DIRS["pids"]}}),  # no memory group: nothing to watch
    json.dumps({"v1": {**V1_DIRS, "devices": f"/sys/fs/cgroup/devices/dynod/{ID}"}}),  # not a dyno's controller
    json.dumps({"v1": {**V1_DIRS, "memory": "/sys/fs/cgroup/memory/system.slice"}}),  # another group
    json.dumps({"v1": {**V1_DIRS, "memory": f"/sys/fs/cgroup/memory/svc/dynod/{ID}/../../x/{ID}"}}),
    json.dumps({"v1": {**V1_DIRS, "memory": f"sys/fs/cgroup/memory/dynod/{ID}"}}),  # relative
    json.dumps({"v1": {**V1_DIRS, "memory": f"/tmp/dynod/{ID}"}}),  # outside the hierarchy
    json.dumps({"v1": {**V1_DIRS, "memory": f"/sys/fs/cgroup/memory/{ID}"}}),  # the hierarchy's root child
    json.dumps({"v1": {**V1_DIRS, "memory": f"/sys/fs/cgroup/pids/dynod/{ID}"}}),  # another hierarchy
    json.dumps({"v1": {**V1_DIRS, "cpu": f"/sys/fs/cgroup/cpu/dynod/{ID}"}}),  # cpu is at cpu,cpuacct here
    json.dumps({"v1": {**V1_DIRS, "memory": f"/sys/fs/cgroup/memory/svc/dynod/{ID}\x00"}}),
    json.dumps({"v1": {**V1_DIRS, "memory": 7}}),
    json.dumps({"v2": f"/sys/fs/cgroup/unified/dynod/{ID}"}),  # v2 on a host whose memory is v1
])
def test_a_record_that_is_not_a_dyno_group_is_refused(record: str) -> None:
    assert recorded_dirs(record, ID, HYBRID) is None


def test_a_record_of_another_dyno_is_refused() -> None:
    assert recorded_dirs(json.dumps({"v1": V1_DIRS}), "shop.web.2.000000", HYBRID) is None


def test_a_v1_record_on_a_pure_v2_host_is_refused() -> None:
    assert recorded_dirs(json.dumps({"v1": V1_DIRS}), ID, PURE_V2) is None
    assert recorded_dirs(json.dumps({"v2": "/sys/fs/cgroup/system.slice"}), ID, PURE_V2) is None


def test_an_old_subtree_goes_once_empty_and_nothing_else_does(tmp_path: Path) -> None:
    # Plain directories stand in for cgroupfs: rmdir refuses a non-empty one there too.
    old = tmp_path / "old" / "dynod"
    other = tmp_path / "other" / "not-dynod"
    own = tmp_path / "new" / "dynod"
    for directory in (old / "shop.web.2.x", other, own):
        directory.mkdir(parents=True)
    gone = [str(old / ID), str(other / ID), str(own / ID)]
    assert remove_old_subtrees(gone, [str(own)], "dynod") == []  # web.2 still there
    os.rmdir(old / "shop.web.2.x")
    assert remove_old_subtrees(gone, [str(own)], "dynod") == [str(old)]
    assert not old.exists() and other.exists() and own.exists()
    assert remove_old_subtrees(gone, [str(own)], "dynod") == []  # already gone: quiet


def test_an_old_subtree_goes_with_the_earlier_dynods_empty_move_primer(tmp_path: Path) -> None:
    old = tmp_path / "old" / "dynod"
    (old / PRIMER_GROUP).mkdir(parents=True)  # its thread went with the dynod killed -9
    assert remove_old_subtrees([str(old / ID)], [str(tmp_path / "new" / "dynod")], "dynod") == [str(old)]
    assert not old.exists()
    busy = tmp_path / "busy" / "dynod"
    (busy / PRIMER_GROUP / "tasks-stand-in").mkdir(parents=True)  # rmdir refuses a group in use
    assert remove_old_subtrees([str(busy / ID)], [], "dynod") == []
    assert (busy / PRIMER_GROUP).exists()
