"""Re-opening recorded groups on adoption checks each directory is reached through no symbolic
link, as ``realpath(d) == d`` did, with the parents' answers cached for the pass (issue 16: three
realpath walks per dyno on every restart)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynod.manager import recorded_cgroup


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, str]:
    root = tmp_path.resolve()
    (root / "subtree" / "app.web.1").mkdir(parents=True)
    (root / "subtree" / "app.web.2").mkdir()
    (root / "elsewhere" / "app.web.3").mkdir(parents=True)
    (root / "linked").symlink_to(root / "elsewhere")  # a parent reached through a link
    (root / "subtree" / "app.web.4").symlink_to(root / "elsewhere" / "app.web.3")  # the group itself a link
    (root / "subtree" / "app.web.5").write_text("")  # not a directory
    return {
        "real": str(root / "subtree" / "app.web.1"),
        "real too": str(root / "subtree" / "app.web.2"),
        "through a linked parent": str(root / "linked" / "app.web.3"),
        "a link itself": str(root / "subtree" / "app.web.4"),
        "a file": str(root / "subtree" / "app.web.5"),
        "missing": str(root / "subtree" / "app.web.6"),
        "missing parent": str(root / "nowhere" / "app.web.7"),
    }


def test_the_same_answer_as_realpath_for_every_kind_of_directory(tree: dict[str, str]) -> None:
    resolved: dict[str, bool] = {}
    for what, directory in tree.items():
        expected = os.path.isdir(directory) and os.path.realpath(directory) == directory
        assert recorded_cgroup._is_real_dir(directory, resolved) is expected, what
    assert [w for w, d in tree.items() if recorded_cgroup._is_real_dir(d, {})] == ["real", "real too"]


def test_each_parent_is_resolved_once_per_pass(tree: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[str] = []
    realpath = os.path.realpath

    def counting(path: str) -> str:
        walked.append(path)
        return realpath(path)

    monkeypatch.setattr(recorded_cgroup.os.path, "realpath", counting)
    resolved: dict[str, bool] = {}
    for directory in (tree["real"], tree["real too"], tree["missing"], tree["real"]):
        recorded_cgroup._is_real_dir(directory, resolved)
    assert walked == [os.path.dirname(tree["real"])]
