"""A cold dyno's cgroup join, timed once at dynod's start and then done by the child itself where
it is cheap (favordynmods in effect, whatever the mount table says), or by dynod's moves.

Against the real kernel: the timing moves a real process into a real v1 group and leaves neither
behind; a dyno started either way runs in its own groups (its cgroup namespace is rooted there,
so the limits it reads are its own) and dynod's log says which way it went.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

from dynod.linux.cgroups import CgroupLimits, detect
from dynod.linux.cgroups.paths import read_mounts
from dynod.model import MiB

from .conftest import running_dynod, write_app

pytestmark = pytest.mark.integration


def _children() -> list[int]:
    """This test process's children, from /proc: a timing must leave none."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                found.append(int(entry))
    return found


def test_a_timed_join_moves_a_real_process_and_leaves_nothing_behind() -> None:
    if "memory" not in read_mounts().v1:
        pytest.skip("a cgroup v1 host: the timed join is of v1 moves")
    backend = detect(parent=None, name=f"dynod-test-join-{secrets.token_hex(3)}")
    group = backend.create("probe", CgroupLimits(memory_max=64 * MiB, memory_high=64 * MiB, pids_max=8,
                                                 cpu_weight=100))
    try:
        before = _children()
        took = group.time_own_join()
        assert took is not None and took > 0
        assert group.pids() == [] and _children() == before  # each sleeper killed and reaped
        for procs in group.procs_files():
            assert Path(procs).read_text() == ""
    finally:
        group.remove()
        backend.remove_subtree()
    assert not any(os.path.exists(root) for root in backend.roots())


def test_a_cold_dyno_runs_in_its_own_groups_whoever_joined_them(tmp_path: Path) -> None:
    with running_dynod() as d:
        log = d.root / "dynod.log"
        line = d.wait_for(lambda: re.search(r"a new dyno's cgroup join takes ([0-9.]+) ms here: (.*)",
                                            log.read_text()), what="the join timed")
        assert line.group(2) in ("dynos join their groups themselves", "dynod moves them")
        d.ctl("apps:create", "joins")
        procfile = ("worker: echo limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
                    " pids=$(cat /sys/fs/cgroup/pids/pids.max); exec sleep infinity\n")
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", procfile)), "-a", "joins")
        d.ctl("ps:scale", "worker=1", "-a", "joins")
        d.up("joins", 1, type="worker")
        # Its cgroup namespace was made after go, rooted at the group it was in: its own limits.
        out = d.wait_for(lambda: re.search(r"limit=(\d+) pids=(\d+)", d.logs("joins")), what="the limits")
        assert (int(out.group(1)), int(out.group(2))) == (1024 * MiB, 256)
        with d.client() as client:
            roots = client.request("GET", "/status")["cgroup_roots"]
        members = []
        for root in roots:  # on the host: in memory, pids and cpu alike, the dyno's own group holds it
            (group,) = [g for g in Path(root).iterdir() if g.name.startswith("joins.worker.1.")]
            members.append(set((group / "cgroup.procs").read_text().split()))
        assert len(roots) == 3 and members[0] and all(m == members[0] for m in members), members
        memory_root = Path(roots[0])
        assert not [p.name for p in memory_root.iterdir() if p.name.startswith("probe.")]
