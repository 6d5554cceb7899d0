"""Warm dynos become attached one-offs without a terminal, and dynos that log, with the right stdio.

A `dynoctl run --no-tty` takes a warm dyno (the spawner hands its stdin pipe over at assign time):
its stdin, stdout, stderr and exit code behave as a cold one-off's. A dyno that logs, made from a
warm dyno, has /dev/null as stdin, as a cold one has, not the pipe the warm dyno was made with. A
one-off with a terminal still starts cold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration


def _warm_groups(d: Dynod) -> set[str]:
    with d.client() as client:
        memory_root = Path(client.request("GET", "/status")["cgroup_roots"][0])
    return {p.name for p in memory_root.iterdir() if p.name.startswith("warm.")}


def _ready(d: Dynod) -> set[str]:
    return d.wait_for(lambda: (groups := _warm_groups(d)) and len(groups) == 2 and groups, what="two warm dynos")


def test_warm_dynos_serve_one_offs_with_pipes_and_dynos_that_log(tmp_path: Path) -> None:
    with running_dynod(warm_pool=2) as d:
        d.ctl("apps:create", "warmrun")
        procfile = "worker: echo stdin=$(readlink /proc/self/fd/0); exec sleep infinity\n"
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", procfile)), "-a", "warmrun")

        before = _ready(d)
        script = "read line; echo got $line; cat; echo oops >&2; exit 3"
        result = d.ctl("run", "--no-tty", "-a", "warmrun", "--", "sh", "-c", script,
                       input=b"first\nrest of it\n", check=False, timeout=60)
        assert result.returncode == 3, result
        assert result.stdout == "got first\nrest of it\n"
        assert result.stderr.strip().endswith("oops")
        after = _ready(d)
        assert len(before - after) == 1  # it took a warm dyno; the pool made another

        # A one-off whose stdin closes at once sees EOF, as a cold one does.
        assert d.ctl("run", "--no-tty", "-a", "warmrun", "--", "cat", input=b"", timeout=60).stdout == ""

        before = _ready(d)
        d.ctl("ps:scale", "worker=1", "-a", "warmrun")
        d.up("warmrun", 1, type="worker")
        line = d.wait_for(lambda: next((x for x in d.logs("warmrun").splitlines() if "app[worker.1]: stdin=" in x),
                                       None), what="the worker's stdin line")
        assert line.endswith("stdin=/dev/null"), line
        assert len(before - _ready(d)) == 1  # from a warm dyno too
        d.ctl("ps:scale", "worker=0", "-a", "warmrun")
        d.wait_for(lambda: not d.dynos("warmrun"), what="worker stopped")
