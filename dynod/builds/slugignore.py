""".slugignore: files the app keeps in git but not in its slug, removed before the buildpacks run.

The file uses gitignore syntax (Heroku documents it so), matched with pathspec's GitIgnoreSpec,
the same rules git itself applies. As in git, a directory that matches is removed whole: a later
negation cannot bring back a file below an excluded directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pathspec

SLUGIGNORE = ".slugignore"


def parse_slugignore(text: str) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


def ignored_paths(build_dir: Path, spec: pathspec.GitIgnoreSpec) -> list[str]:
    """Paths (relative, '/'-separated) to remove: the topmost matching files and directories.

    Symlinks are judged as files and never followed, so a link cannot make the walk leave the
    build directory.
    """
    found: list[str] = []
    for top, dirs, files in os.walk(build_dir, followlinks=False):
        rel_top = os.path.relpath(top, build_dir)
        prefix = "" if rel_top == "." else rel_top.replace(os.sep, "/") + "/"
        kept_dirs = []
        for name in sorted(dirs):
            rel = prefix + name
            if os.path.islink(os.path.join(top, name)):
                if spec.match_file(rel):
                    found.append(rel)
            elif spec.match_file(rel + "/"):
                found.append(rel)
            else:
                kept_dirs.append(name)
        dirs[:] = kept_dirs  # matched directories are removed whole: do not descend
        found.extend(prefix + name for name in sorted(files) if spec.match_file(prefix + name))
    return found


def apply_slugignore(build_dir: Path) -> list[str]:
    """Remove what ``build_dir/.slugignore`` names; returns the removed paths (empty without one)."""
    path = build_dir / SLUGIGNORE
    if not path.is_file() or path.is_symlink():
        return []
    spec = parse_slugignore(path.read_text(errors="replace"))
    removed = ignored_paths(build_dir, spec)
    for rel in removed:
        target = build_dir / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return removed
