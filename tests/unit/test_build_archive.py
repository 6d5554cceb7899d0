"""The extractor every archive from outside goes through: attacks that must write nothing outside."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from dynod.builds.archive import Extractor, remove_tree, unpack_source
from dynod.errors import UserError


def member(name: str, data: bytes | None = b"x", **kw: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    for key, value in kw.items():
        setattr(info, key, value)
    if info.isreg():
        info.size = len(data or b"")
        return info, data or b""
    return info, None


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A stand-in for a host file an attacker aims at, outside the destination."""
    target = tmp_path / "host" / "passwd"
    target.parent.mkdir()
    target.write_text("root:x:0:0\n")
    target.chmod(0o644)
    return target


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    return path


def unpack(archive: io.BytesIO, dest: Path, **kw: int) -> None:
    unpack_source(archive, dest, uid=os.getuid(), gid=os.getgid(), **kw)


def test_an_app_unpacks_with_its_files_links_and_modes(dest: Path) -> None:
    unpack(tar_of([member("./", type=tarfile.DIRTYPE), member("./Procfile", b"web: x\n"),
                   member("bin/run", b"#!/bin/sh\n", mode=0o700), member("lib", type=tarfile.DIRTYPE),
                   member("link", type=tarfile.SYMTYPE, linkname="bin/run"),
                   member("hard", type=tarfile.LNKTYPE, linkname="Procfile"),
                   member("abs", type=tarfile.SYMTYPE, linkname="/usr/bin/python3")], "w:gz"), dest)
    assert (dest / "Procfile").read_text() == "web: x\n"
    assert stat.S_IMODE((dest / "bin/run").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "lib").stat().st_mode) == 0o755
    assert os.readlink(dest / "link") == "bin/run" and os.readlink(dest / "abs") == "/usr/bin/python3"
    assert (dest / "hard").stat().st_ino == (dest / "Procfile").stat().st_ino


def test_symlink_then_file_of_the_same_name_does_not_write_through_the_link(dest: Path, host: Path) -> None:
    with pytest.raises(UserError, match="'x' appears twice"):
        unpack(tar_of([member("x", type=tarfile.SYMTYPE, linkname=str(host)),
                       member("x", b"pwned\n", mode=0o777)]), dest)
    assert host.read_text() == "root:x:0:0\n" and stat.S_IMODE(host.stat().st_mode) == 0o644


def test_dangling_link_then_file_creates_nothing_outside(dest: Path, host: Path) -> None:
    planted = host.parent / "cron.d-job"
    with pytest.raises(UserError, match="appears twice"):
        unpack(tar_of([member("job", type=tarfile.SYMTYPE, linkname=str(planted)),
                       member("job", b"* * * * * root sh\n")]), dest)
    assert not planted.exists()


def test_file_beneath_a_symlinked_directory_is_refused(dest: Path, host: Path) -> None:
    with pytest.raises(UserError, match="lies beneath d, which is a symlink"):
        unpack(tar_of([member("d", type=tarfile.SYMTYPE, linkname=str(host.parent)),
                       member("d/passwd", b"pwned\n")]), dest)
    assert host.read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("linkname", ["/HOST", "../host/passwd", "x/../../host/passwd", "missing", "sym"])
def test_hard_link_to_anything_but_an_earlier_file_is_refused(dest: Path, host: Path, linkname: str) -> None:
    linkname = linkname.replace("/HOST", str(host))
    with pytest.raises(UserError, match="hard link|absolute|'\\.\\.'"):
        unpack(tar_of([member("sym", type=tarfile.SYMTYPE, linkname=str(host)),
                       member("h", type=tarfile.LNKTYPE, linkname=linkname)]), dest)
    assert host.stat().st_nlink == 1 and not (dest / "h").exists()


@pytest.mark.parametrize(("name", "why"), [("../escape", "'..' component"), ("a/../../escape", "'..'"),
                                           ("/tmp/escape", "absolute path")])
def test_names_that_leave_the_destination_are_refused(dest: Path, name: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        unpack(tar_of([member(name, b"x")]), dest)
    assert not (dest.parent / "escape").exists()


@pytest.mark.parametrize(("kind", "why"), [(tarfile.CHRTYPE, "device node"), (tarfile.BLKTYPE, "device node"),
                                           (tarfile.FIFOTYPE, "FIFO")])
def test_device_nodes_and_fifos_are_refused(dest: Path, kind: bytes, why: str) -> None:
    with pytest.raises(UserError, match=why):
        unpack(tar_of([member("mem", type=kind, devmajor=1, devminor=1)]), dest)
    assert list(dest.iterdir()) == []


def test_setuid_bits_are_refused(dest: Path) -> None:
    with pytest.raises(UserError, match="setuid or setgid"):
        unpack(tar_of([member("su", b"#!/bin/sh\n", mode=0o4755)]), dest)


def test_a_huge_member_is_refused_before_its_data_is_read(dest: Path) -> None:
    info = tarfile.TarInfo("huge")
    info.size = 10 << 30
    # The header alone, no data: refused on what it declares, so a 10 GB member costs nothing.
    archive = io.BytesIO(info.tobuf(format=tarfile.PAX_FORMAT))
    with pytest.raises(UserError, match="unpacks to more than 2 GB"):
        unpack(archive, dest)
    assert list(dest.iterdir()) == []


def test_many_empty_members_count_toward_the_limit(dest: Path) -> None:
    with pytest.raises(UserError, match="more than 10240 bytes"):
        unpack(tar_of([member(f"f{i}", b"") for i in range(30)]), dest, limit_bytes=10 * 1024)


def test_what_is_not_a_tarball_is_one_line(dest: Path) -> None:
    with pytest.raises(UserError, match="not a readable tar archive"):
        unpack(io.BytesIO(b"PK\x03\x04 a zip"), dest)


def test_the_extractor_never_follows_a_link_it_did_not_write(dest: Path, host: Path) -> None:
    """Even with the rules bypassed: a link planted where a directory or file goes is not followed."""
    os.symlink(host.parent, dest / "d")
    os.symlink(host, dest / "f")
    extractor = Extractor(dest, os.getuid(), os.getgid())
    try:
        for name in ("d/passwd", "f"):
            info, data = member(name, b"pwned\n")
            with pytest.raises(UserError, match="Cannot unpack"):
                extractor.add(info, name, io.BytesIO(data or b""))
        info, _ = member("d", type=tarfile.DIRTYPE)
        with pytest.raises(UserError, match="Cannot unpack"):
            extractor.add(info, "d", None)
    finally:
        extractor.close()
    assert host.read_text() == "root:x:0:0\n"


def test_a_member_nested_deeper_than_the_limit_is_refused(dest: Path) -> None:
    deep = "/".join(["d"] * 300) + "/f"
    with pytest.raises(UserError, match="300 directories deep|301 directories deep"):
        unpack(tar_of([member(deep, b"x")]), dest)


def _deep_tree(root: Path, depth: int, link_to: Path) -> None:
    fd = os.open(root, os.O_RDONLY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            if level % 100 == 0:
                os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
                os.symlink(link_to, "link", dir_fd=fd)
            next_fd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    finally:
        os.close(fd)


def test_remove_tree_removes_what_shutil_rmtree_cannot(tmp_path: Path, host: Path) -> None:
    import shutil

    tree = tmp_path / "cache"
    tree.mkdir()
    _deep_tree(tree, 1500, host)  # what a build can make in its cache: past Python's recursion and PATH_MAX
    with pytest.raises(RecursionError):
        shutil.rmtree(tree, ignore_errors=True)
    for i in range(200):  # wide as well as deep
        (tree / f"w{i}").mkdir()
    remove_tree(tree)
    assert not tree.exists()
    assert host.read_text() == "root:x:0:0\n"  # links were removed, never followed
    remove_tree(tree)  # already gone: nothing to do


def test_remove_tree_of_a_link_removes_the_link_only(tmp_path: Path, host: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(host.parent)
    remove_tree(link)
    assert not link.is_symlink() and host.exists()


@pytest.mark.parametrize(("names", "why"), [
    (["d/" * 100 + "a\nb" + "x" * 200] * 2, "appears twice"),
    (["a\nb" + "x" * 5000], "over 255 bytes"),
])
def test_errors_are_one_short_line_whatever_the_name(dest: Path, names: list[str], why: str) -> None:
    with pytest.raises(UserError) as refused:
        unpack(tar_of([member(name, b"1") for name in names]), dest)
    message = str(refused.value)
    assert "\n" not in message and len(message) < 300 and why in message
