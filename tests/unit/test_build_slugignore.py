from __future__ import annotations

import os
from pathlib import Path

from dynod.builds.slugignore import apply_slugignore, ignored_paths, parse_slugignore


def tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


def test_gitignore_rules(tmp_path: Path):
    tree(tmp_path, ["app.py", "docs/a.md", "src/x.pyc", "src/keep.py", "tests/t.py", "build/keep.me",
                    "a/tests/deep.py", "README.md", "notes.md"])
    spec = parse_slugignore("# comment\n*.pyc\n/docs/\ntests/\n*.md\n!README.md\nbuild/\n!build/keep.me\n")
    assert sorted(ignored_paths(tmp_path, spec)) == ["a/tests", "build", "docs", "notes.md", "src/x.pyc", "tests"]


def test_apply_removes_and_reports(tmp_path: Path):
    tree(tmp_path, ["app.py", "spec/a_spec.rb", "big.psd"])
    (tmp_path / ".slugignore").write_text("spec\n*.psd\n")
    removed = apply_slugignore(tmp_path)
    assert sorted(removed) == ["big.psd", "spec"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".slugignore", "app.py"]


def test_symlinked_directory_is_removed_as_a_link_never_followed(tmp_path: Path):
    outside = tmp_path / "outside"
    tree(outside, ["precious.txt"])
    app = tmp_path / "app"
    tree(app, ["app.py"])
    os.symlink(outside, app / "linked")
    (app / ".slugignore").write_text("linked\n*.txt\n")
    assert apply_slugignore(app) == ["linked"]
    assert (outside / "precious.txt").exists()


def test_without_a_slugignore_nothing_changes(tmp_path: Path):
    tree(tmp_path, ["a.md"])
    assert apply_slugignore(tmp_path) == [] and (tmp_path / "a.md").exists()
