"""CPU load from a real dynod: a worker that spins shows a dyno load above 0 in `dynoctl metrics`
and in the API's series, an idle one shows none; counted from the dyno's own cgroup only."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Dynod, running_dynod, write_app
from .test_metrics_router import with_runtime_metrics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def load_dynod() -> Iterator[Dynod]:
    with running_dynod() as d:
        with_runtime_metrics(d)
        yield d


def test_a_busy_dyno_shows_load_and_an_idle_one_none(load_dynod: Dynod, tmp_path: Path) -> None:
    d = load_dynod
    app = f"l{random.getrandbits(32):08x}"
    d.ctl("apps:create", app)
    try:
        procfile = ("busy: python3 -c 'while True: pass'\n"
                    "idle: python3 -c 'import time; time.sleep(3600)'\n")
        d.ctl("deploy", "--no-build", str(write_app(tmp_path / "src", procfile)), "-a", app)
        d.ctl("ps:scale", "busy=1", "idle=1", "-a", app)

        def loaded() -> dict | None:
            with d.client() as client:
                points = [p for p in client.get_metrics(app, "busy", "1h")["points"] if p["load"]]
            return points[-1]["load"] if points and points[-1]["load"]["max"] >= 0.05 else None

        # The averages start at 0 and the 1-minute one climbs ~8% of the way to 1 every 5 s.
        load = d.wait_for(loaded, timeout=40, what="a dyno load on the busy dyno")
        assert 0.05 <= load["max"] <= 2.0, load  # one spinning thread: about 1, never the host's load

        with d.client() as client:
            idle = [p["load"] for p in client.get_metrics(app, "idle", "1h")["points"] if p["load"]]
        assert idle and all(p["max"] < 0.05 for p in idle), idle  # sampled, and its sleeper counts for nothing

        out = d.ctl("metrics", "-a", app, "--type", "busy", "--since", "1h").stdout
        peak = re.search(r"Dyno load\s+(\d+\.\d\d) peak", out)
        assert peak is not None and float(peak.group(1)) >= 0.05, out
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
