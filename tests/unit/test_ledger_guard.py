"""The state dir is private, and a lost ledger is refused instead of being started afresh."""

# The backend fixtures are imported by name; pytest passes them in as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dynod.errors import UserError
from dynod.ledger import LedgerMissing, open_ledger
from dynod.ledger.guard import app_data, open_ledger_of, secure_state_dir
from tests.ledger_backends import Backend, backend, pg_server  # noqa: F401 - fixtures


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def with_app_data(state: Path) -> Path:
    (state / "slugs" / "unpacked" / ("b" * 64)).mkdir(parents=True)
    (state / "slugs" / ("b" * 64 + ".tgz")).write_bytes(b"slug")
    (state / "repos" / "shop.git").mkdir(parents=True)
    return state


def test_a_new_state_dir_is_made_0700(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    secure_state_dir(state)
    assert mode(state) == 0o700


def test_an_older_open_state_dir_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    secure_state_dir(state)
    assert mode(state) == 0o700


def test_a_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(UserError, match="is not a directory"):
        secure_state_dir(tmp_path / "state")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_state_dir_of_another_user_is_refused_and_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chown(state, 65534, 65534)
    with pytest.raises(UserError, match=r"belongs to uid 65534.*chown"):
        secure_state_dir(state)
    assert mode(state) == 0o755


def test_app_data_counts_slugs_repos_and_builds(tmp_path: Path) -> None:
    assert app_data(tmp_path) == []
    for empty in ("slugs/unpacked", "repos", "builds", "logs"):
        (tmp_path / empty).mkdir(parents=True)
    assert app_data(tmp_path) == []  # the directories of a fresh start are not data
    with_app_data(tmp_path)
    (tmp_path / "builds" / "shop").mkdir()
    assert app_data(tmp_path) == ["1 slug", "1 unpacked slug", "1 git repository", "1 app's build records"]
    (tmp_path / "repos" / "blog.git").mkdir()
    (tmp_path / "slugs" / ("c" * 64 + ".tgz")).write_bytes(b"")
    (tmp_path / "slugs" / ".tmp-upload").write_bytes(b"")  # a temp file is not a slug
    assert app_data(tmp_path)[:3] == ["2 slugs", "1 unpacked slug", "2 git repositories"]


def test_a_new_install_creates_a_private_ledger(tmp_path: Path) -> None:
    secure_state_dir(tmp_path / "state")
    path = tmp_path / "state" / "dynod.sqlite3"
    led = open_ledger_of(tmp_path / "state", str(path))
    try:
        led.create_app("shop")  # a write: the WAL and SHM exist now
        for suffix in ("", "-wal", "-shm"):
            assert mode(Path(f"{path}{suffix}")) == 0o600, suffix
    finally:
        led.close()


def test_an_older_readable_ledger_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "dynod.sqlite3"
    open_ledger(str(path)).close()
    os.chmod(path, 0o644)
    open_ledger(str(path)).close()
    assert mode(path) == 0o600


@pytest.mark.parametrize("lost", ["missing", "empty"])
def test_a_lost_ledger_with_apps_data_is_refused_and_left_as_it_is(tmp_path: Path, lost: str) -> None:
    state = with_app_data(tmp_path / "state")
    path = state / "dynod.sqlite3"
    if lost == "empty":
        path.write_bytes(b"")
    with pytest.raises(UserError) as info:
        open_ledger_of(state, str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"The ledger at {path} is {'missing' if lost == 'missing' else 'empty (0 bytes)'}, ")
    assert "1 slug, 1 unpacked slug, 1 git repository" in message
    assert "Restore the ledger from a backup" in message
    assert not isinstance(info.value, LedgerMissing)  # the guard's sentence, not the bare fact
    if lost == "missing":
        assert not path.exists()
    else:
        assert path.read_bytes() == b""
    left = sorted(p.name for p in state.iterdir())
    assert left == (["repos", "slugs"] if lost == "missing" else ["dynod.sqlite3", "repos", "slugs"])  # no -wal


def test_a_ledger_file_with_no_tables_is_refused_untouched(tmp_path: Path) -> None:
    import sqlite3

    state = with_app_data(tmp_path / "state")
    path = state / "dynod.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 1")  # a valid database file with a header and no tables
    raw.close()
    before = path.read_bytes()
    with pytest.raises(UserError, match="has no tables, but"):
        open_ledger_of(state, str(path))
    assert path.read_bytes() == before


def test_a_ledger_with_no_apps_is_not_lost(tmp_path: Path) -> None:
    # Destroying every app leaves slugs until gc: a valid ledger with no apps is accepted.
    state = with_app_data(tmp_path / "state")
    path = state / "dynod.sqlite3"
    open_ledger(str(path)).close()
    led = open_ledger_of(state, str(path))
    assert led.list_apps() == []
    led.close()


def test_each_backend_refuses_to_create_when_told_not_to(backend: Backend) -> None:
    with pytest.raises(LedgerMissing):
        backend.open(may_create=False)
    backend.open().close()  # a new install makes the schema
    led = backend.open(may_create=False)  # and from then on it is not missing
    try:
        assert led.list_apps() == []
    finally:
        led.close()
