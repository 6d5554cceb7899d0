"""The ledger's state filter on dyno records (issue 16): the reconcile pass asks each app for its
crashed dynos on every wake, so the filter is SQL's, and it must give exactly what filtering every
record in Python gave, on each backend (PostgreSQL where a private server can run: as root)."""

from __future__ import annotations

import time

import pytest

from dynod.ledger import Ledger
from dynod.model import DynoRecord, DynoState
from tests.ledger_backends import backend, ledger, pg_server  # noqa: F401 - fixtures


def _record(app: str, name: str, state: DynoState) -> DynoRecord:
    now = time.time()
    return DynoRecord(id=f"{app}.{name}.x", app=app, name=name, type=name.split(".")[0], release=1,
                      size="standard-1X", command="sleep infinity", state=state, pid=None, ip=None, port=5000,
                      created_at=now, state_changed_at=now, attached=False, exit_status=None, cgroup="")


@pytest.fixture
def dynos(ledger: Ledger) -> Ledger:  # noqa: F811 - the backends' fixture
    states = [DynoState.UP, DynoState.CRASHED, DynoState.STARTING, DynoState.CRASHED, DynoState.DOWN]
    for app in ("shop", "blog"):
        ledger.create_app(app)
        for index, state in enumerate(states, start=1):
            ledger.put_dyno(_record(app, f"worker.{index}", state))
        ledger.put_dyno(_record(app, "web.10", DynoState.CRASHED))
    return ledger


def test_the_state_filter_gives_what_filtering_every_record_gave(dynos: Ledger) -> None:
    for app in ("shop", "blog", None):
        for state in DynoState:
            everything = dynos.list_dynos(app)
            assert dynos.list_dynos(app, state=state) == [r for r in everything if r.state == state]


def test_crashed_dynos_of_one_app_in_slot_order(dynos: Ledger) -> None:
    crashed = dynos.list_dynos("shop", state=DynoState.CRASHED)
    assert [r.name for r in crashed] == ["web.10", "worker.2", "worker.4"]
    assert {r.app for r in crashed} == {"shop"}


def test_a_state_that_is_no_state_is_refused(dynos: Ledger) -> None:
    with pytest.raises(ValueError):
        dynos.list_dynos("shop", state="asleep")  # type: ignore[arg-type]
