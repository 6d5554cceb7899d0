import os
import stat

import pytest

from dynod.acm.schedule import AppState, DomainState
from dynod.acm.store import AcmStore


def test_state_and_account_key_are_private_and_survive_a_new_store(tmp_path):
    store = AcmStore(tmp_path / "acm")
    store.save("myapp", AppState(enabled=True, domains={"www.a.test": DomainState()}))
    store.save_account_key(b"KEY")
    for path in (tmp_path / "acm" / "apps" / "myapp.json", tmp_path / "acm" / "account-key.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (tmp_path / "acm", tmp_path / "acm" / "apps"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    again = AcmStore(tmp_path / "acm")
    assert again.load("myapp").domains == {"www.a.test": DomainState()}
    assert again.account_key() == b"KEY" and again.apps() == ["myapp"]
    assert [p.name for p in (tmp_path / "acm" / "apps").iterdir()] == ["myapp.json"]  # no temp file left


def test_removal_and_unknown_apps(tmp_path):
    store = AcmStore(tmp_path / "acm")
    assert store.load("nothing") == AppState() and store.apps() == [] and store.account_key() is None
    store.save("myapp", AppState(enabled=True))
    store.remove("myapp")
    store.remove("myapp")  # twice is fine
    assert store.apps() == []


def test_a_name_that_is_not_an_app_never_becomes_a_path(tmp_path):
    store = AcmStore(tmp_path / "acm")
    for bad in ("../escape", "a/b", "", "UPPER"):
        with pytest.raises(ValueError):
            store.save(bad, AppState())
    assert not (tmp_path / "escape.json").exists()


def test_a_damaged_file_reads_as_disabled_state(tmp_path):
    store = AcmStore(tmp_path / "acm")
    store.save("myapp", AppState(enabled=True))
    (tmp_path / "acm" / "apps" / "myapp.json").write_bytes(b"\xff{not json")
    assert store.load("myapp") == AppState()


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path):
    store = AcmStore(tmp_path / "acm")
    store.save("myapp", AppState())
    target = tmp_path / "victim"
    target.write_text("untouched")
    os.symlink(target, tmp_path / "acm" / "apps" / f".myapp.json.{os.getpid()}.tmp")
    with pytest.raises(OSError):
        store.save("myapp", AppState(enabled=True))
    assert target.read_text() == "untouched"
