"""ps:wait's count: dynos up on the latest release against the dynos there should be."""

from __future__ import annotations

from dynod.cli.ps import wait_progress


def test_ps_wait_counts_dynos_up_on_the_release() -> None:
    def d(name: str, version: int, state: str = "up") -> dict:
        return {"name": name, "type": name.split(".")[0], "state": state, "release": {"version": version}}

    formation = [{"type": "web", "quantity": 2}, {"type": "worker", "quantity": 1}]
    dynos = [d("web.1", 5), d("web.1", 4), d("web.2", 5, "starting"), d("worker.1", 5), d("run.1234", 3)]
    assert wait_progress(dynos, formation, 5) == (2, 4)  # the old web.1 counts until it is gone
    assert wait_progress(dynos, formation, 5, type="worker") == (1, 1)
    assert wait_progress(dynos, formation, 5, with_run=True) == (2, 5)
    done = [d("web.1", 5), d("web.2", 5), d("worker.1", 5)]
    assert wait_progress(done, formation, 5) == (3, 3)
