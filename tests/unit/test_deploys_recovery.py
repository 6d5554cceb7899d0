"""A build or release phase running when dynod stopped ends failed at the next start, never pending."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from dynod.deploys import Deploys
from dynod.ledger import open_ledger
from dynod.settings import Settings


def test_interrupted_builds_and_release_phases_are_marked_failed(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    (tmp_path / "state").mkdir()
    ledger = open_ledger(f"sqlite:///{tmp_path / 'state' / 'dynod.sqlite3'}")
    try:
        ledger.create_app("shop")
        ledger.create_release("shop", slug_id=None, config={}, process_types={}, description="Initial release")
        pending = ledger.create_release("shop", slug_id="a" * 64, config={}, process_types={"web": "x"},
                                        description="Deploy aaaaaa", status="pending")
        platform = SimpleNamespace(settings=settings, ledger=ledger)
        first = Deploys(platform)
        running = first.store.create("shop", source="tarball")
        done = first.store.finish(first.store.create("shop", source="tarball"), status="succeeded")
        # dynod stops here; the next one looks at what was left running.
        Deploys(platform)
        builds = {b.id: b for b in first.store.list("shop")}
        assert builds[running.id].status == "failed" and "dynod stopped during the build" in builds[running.id].error
        assert builds[done.id].status == "succeeded"
        assert ledger.get_release("shop", pending.version).status == "failed"
        assert ledger.get_release("shop", 1).status == "succeeded"
    finally:
        ledger.close()
