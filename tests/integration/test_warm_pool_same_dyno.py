"""A dyno made from the warm pool is exactly what a cold one is.

A warm dyno makes part of its root (its tmpfs, /proc and /dev: dyno_init.prepare_root) before it
knows what it will run. What the app sees must not tell the two apart: the same mount table (in
the same order, "/" first, the same options), uid, capabilities, seccomp, cgroups, limits,
stdin and environment. The same one-off runs in a dynod with the pool and in one without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import running_dynod, write_app

pytestmark = pytest.mark.integration

# Everything a dyno's process can see of how it was made. Mount ids and device numbers differ
# from dyno to dyno: each mount is named by its mount point and its parent's mount point instead;
# the hostname, the address (each dynod has its own subnet) and run.N are each dyno's own.
PROBE = r"""
awk 'NR==FNR {at[$1]=$5; next}
     {parent = ($2 in at) ? at[$2] : "(outside)"; $1=""; $2=parent; $3=""; print "mount" $0}' \
    /proc/self/mountinfo /proc/self/mountinfo
grep -E '^(Uid|Gid|Groups|Seccomp|NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status
sed 's/[0-9a-f-]\{36\}/HOSTNAME/' /proc/self/cgroup
echo "cwd=$(pwd) stdin=$(readlink /proc/self/fd/0 | tr -d 0-9) nofile=$(ulimit -n) core=$(ulimit -c) user=$(whoami)"
ls -la /dev /sys/fs/cgroup | awk '{print $1, $3, $4, $NF}'
sed -e 's/[0-9a-f-]\{36\}/HOSTNAME/' -e 's/^198\.1[89]\.[0-9.]*/ADDRESS/' /etc/hosts /etc/hostname
env | grep -v -E '^(_|SHLVL|PWD)=' | sed 's/^DYNO=run\.[0-9]*$/DYNO=run.N/' | sort
"""


def _run_probe(tmp_path: Path, warm_pool: int) -> str:
    with running_dynod(warm_pool=warm_pool) as d:
        d.ctl("apps:create", "same")
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / f"src{warm_pool}", "worker: sleep infinity\n")),
              "-a", "same")
        with d.client() as client:
            memory_root = Path(client.request("GET", "/status")["cgroup_roots"][0])

        def warm() -> set[str]:
            return {p.name for p in memory_root.iterdir() if p.name.startswith("warm.")}

        if warm_pool:
            before = d.wait_for(lambda: (groups := warm()) and len(groups) == warm_pool and groups,
                                what="a full warm pool")
        result = d.ctl("run", "--no-tty", "-a", "same", "--", "bash", "-c", PROBE, input=b"", timeout=60)
        if warm_pool:
            assert before - warm(), "the one-off did not take a warm dyno"
        return result.stdout


def test_a_dyno_from_the_pool_sees_exactly_what_a_cold_one_sees(tmp_path: Path) -> None:
    cold = _run_probe(tmp_path, 0)
    warm = _run_probe(tmp_path, 2)
    mounts = [line.split()[3] for line in cold.splitlines() if line.startswith("mount ")]
    assert mounts[0] == "/" and "/proc" in mounts and "/dev/pts" in mounts, cold
    assert "Seccomp:\t2" in cold and "NoNewPrivs:\t1" in cold, cold
    assert warm.splitlines() == cold.splitlines()
