"""The slug rules as the packing walk applies them (``_MemberRules.check_walked``, from each
member's lstat) against the archive rules (``check``, from a TarInfo): the same verdict, the
same line, for every tree the walk can meet."""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest

from dynod.builds import slug
from dynod.errors import UserError


def _by_archive_rules(src: Path, limit: int) -> tuple[str, int]:
    rules = slug._MemberRules(limit)
    try:
        for path, name, st in slug._walk_for_pack(src):
            # A TarInfo made the standard library's way, one TarFile per member: tar stores hard
            # links as files (--hard-dereference), so none may become a link member here.
            info = tarfile.TarFile(fileobj=io.BytesIO(), mode="w").gettarinfo(
                path if name != slug.ROOT else os.path.realpath(path), arcname=name)
            assert stat.S_IFMT(st.st_mode) == stat.S_IFMT(os.lstat(path).st_mode) or name == slug.ROOT
            rules.check(info)
    except UserError as exc:
        return str(exc), rules.total
    return "", rules.total


def _by_walk(src: Path, limit: int) -> tuple[str, int]:
    rules = slug._MemberRules(limit)
    try:
        for path, name, st in slug._walk_for_pack(src):
            rules.check_walked(name, path, st)
    except UserError as exc:
        return str(exc), rules.total
    return "", rules.total


def _random_tree(root: Path, rng: random.Random) -> None:
    root.mkdir()
    dirs = [root]
    for i in range(rng.randint(1, 25)):
        parent = rng.choice(dirs)
        name = rng.choice(["a", "b", "lib", "Procfile", ".git", "x y", "é", f"n{i}"])
        name += "" if rng.random() < 0.5 else str(i)
        path = parent / name
        if path.exists() or path.is_symlink():
            continue
        kind = rng.choices(["file", "dir", "link-in", "link-out", "link-abs", "fifo", "setuid", "hard", "big"],
                           [30, 20, 8, 5, 4, 2, 2, 3, 2])[0]
        if kind == "dir":
            path.mkdir()
            dirs.append(path)
        elif kind == "file":
            path.write_bytes(b"x" * rng.randint(0, 3000))
        elif kind == "big":
            path.write_bytes(b"y" * 40_000)
        elif kind == "link-in":
            os.symlink(rng.choice(["a", "../a", "lib/x", "."]), path)
        elif kind == "link-out":
            os.symlink("../" * (len(path.relative_to(root).parts) + rng.randint(0, 2)) + "etc/passwd", path)
        elif kind == "link-abs":
            os.symlink(rng.choice(["/app/a", "/usr/bin/python3", "/"]), path)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "setuid":
            path.write_text("s")
            path.chmod(rng.choice([0o4755, 0o2755, 0o6755]))
        elif kind == "hard":
            files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
            if files:
                os.link(rng.choice(files), path)


@pytest.mark.parametrize("seed", range(300))
def test_the_walk_rules_give_the_archive_rules_verdict(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    src = tmp_path / "app"
    _random_tree(src, rng)
    limit = rng.choice([1 << 30, 20_000, 60_000])
    assert _by_walk(src, limit) == _by_archive_rules(src, limit)


def test_each_refusal_is_the_archive_rules_line(tmp_path: Path) -> None:
    cases = {
        "fifo": lambda p: os.mkfifo(p / "pipe"),
        "setuid": lambda p: ((p / "s").write_text("s"), (p / "s").chmod(0o4755)),
        "link out": lambda p: os.symlink("../../etc/passwd", p / "evil"),
        "procfile link": lambda p: os.symlink("other", p / "Procfile"),
        "procfile dir": lambda p: (p / "Procfile").mkdir(),
        "too big": lambda p: (p / "big").write_bytes(b"z" * 5000),
    }
    for what, make in cases.items():
        src = tmp_path / what.replace(" ", "-")
        src.mkdir()
        make(src)
        said, _ = _by_walk(src, 4096)
        assert said and said == _by_archive_rules(src, 4096)[0], what
    if os.geteuid() == 0:
        src = tmp_path / "device"
        src.mkdir()
        os.mknod(src / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        said, _ = _by_walk(src, 1 << 30)
        assert said == _by_archive_rules(src, 1 << 30)[0]
        assert said == "Slug member 'app/null' is a device node; remove it from the app."
