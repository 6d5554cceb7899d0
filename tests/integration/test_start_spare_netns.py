"""The spawner makes the next dyno's network namespace ahead, while idle (a namespace made right
after a dyno stopped waits for that dyno's teardown): each dyno is born in the spare one, which
no process entered before, and every dyno's differs from the host's and from each other's."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import Dynod, running_dynod, write_app

pytestmark = pytest.mark.integration


def _spawner_pid(d: Dynod) -> int:
    out = subprocess.run(["pgrep", "-f", f"dynod.linux.spawner --socket {d.root}"], capture_output=True,
                         text=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def _spare(spawner: int) -> str | None:
    """The network namespace the spawner holds that is not the host's (its own), if any."""
    own = os.readlink(f"/proc/{spawner}/ns/net")
    held = set()
    for fd in os.listdir(f"/proc/{spawner}/fd"):
        try:
            target = os.readlink(f"/proc/{spawner}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("net:[") and target != own:
            held.add(target)
    assert len(held) <= 1, held
    return held.pop() if held else None


def _netns_of(d: Dynod, app: str, name: str) -> str:
    with d.client() as client:
        memory_root = Path(client.request("GET", "/status")["cgroup_roots"][0])
    (group,) = [g for g in memory_root.iterdir() if g.name.startswith(f"{app}.{name}.")]
    pids = (group / "cgroup.procs").read_text().split()
    namespaces = {os.readlink(f"/proc/{pid}/ns/net") for pid in pids}
    assert len(namespaces) == 1, namespaces
    return namespaces.pop()


def test_each_dyno_is_born_in_the_spare_namespace_made_ahead(tmp_path: Path) -> None:
    with running_dynod() as d:
        d.ctl("apps:create", "spare")
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", "worker: exec sleep infinity\n")), "-a", "spare")
        spawner = _spawner_pid(d)
        host = os.readlink(f"/proc/{spawner}/ns/net")
        seen = {host}
        for count in (1, 2):
            spare = d.wait_for(lambda: _spare(spawner), what="a spare network namespace")
            assert spare not in seen  # made fresh: never the host's, never an earlier dyno's
            d.ctl("ps:scale", f"worker={count}", "-a", "spare")
            d.up("spare", count, type="worker")
            born_in = _netns_of(d, "spare", f"worker.{count}")
            assert born_in == spare
            seen.add(born_in)
            # Handed over: the spawner no longer holds it (the next one is made once idle).
            assert _spare(spawner) != spare
        assert _netns_of(d, "spare", "worker.1") != _netns_of(d, "spare", "worker.2")
