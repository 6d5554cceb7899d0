"""The built-in buildpacks a build is shown: copied once per dynod start, then shared read-only by
every build that runs them alone, instead of copied into each build's own directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dynod.builds.buildpack import Buildpack, builtin_buildpacks, prepared_builtins, shared_builtins


def _listing(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return out


def test_the_prepared_builtins_are_a_fresh_copy_of_every_builtin_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "build-work" / ".builtin-buildpacks"
    (root / "python").mkdir(parents=True)
    (root / "python" / "stale").write_text("an older dynod's file")
    (root / "other").mkdir()
    prepared = prepared_builtins(root)
    originals = builtin_buildpacks()
    assert [(bp.name, bp.source) for bp in prepared] == [(bp.name, bp.source) for bp in originals]
    assert sorted(p.name for p in root.iterdir()) == sorted(bp.name for bp in originals)
    for copy, original in zip(prepared, originals, strict=True):
        assert copy.path == root / original.name
        assert _listing(copy.path) == _listing(original.path)
    assert shared_builtins(prepared) == root


def _builtin(root: Path, name: str) -> Buildpack:
    (root / name / "bin").mkdir(parents=True)
    return Buildpack(name, root / name, name)


def test_builtins_are_shared_only_from_a_directory_that_holds_them_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "builtins"
    both = [_builtin(root, "python"), _builtin(root, "nodejs")]
    assert shared_builtins(both) == root
    assert shared_builtins(both[:1]) is None  # the directory holds one more: it would be shown too
    (root / "secret").write_text("not a buildpack")
    assert shared_builtins(both) is None
    (root / "secret").unlink()
    elsewhere = _builtin(tmp_path / "other", "go")
    assert shared_builtins([*both, elsewhere]) is None  # two directories: no one to show
    renamed = Buildpack("ruby", root / "python", "ruby")  # shown at /buildpacks/ruby: must be named so
    assert shared_builtins([renamed, both[1]]) is None
    assert shared_builtins([Buildpack("x", tmp_path / "gone" / "x", "x")]) is None
