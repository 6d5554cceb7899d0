from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from dynod.builds.build_output import BuildOutputSplitter
from dynod.builds.builds import BuildStore, unpack_source
from dynod.errors import NotFound, UserError


def test_lines_are_split_across_chunks_and_bounded():
    s = BuildOutputSplitter(max_line_bytes=10)
    assert s.feed(b"-----> Py") == []
    assert s.feed(b"thon\r\n  ok\nabcdefghijklmnopqrstu") == ["-----> Pyt", "hon", "  ok", "abcdefghij",
                                                                "klmnopqrst"]
    assert s.flush() == ["u"]
    assert s.flush() == []


def test_invalid_utf8_is_replaced_not_raised():
    assert BuildOutputSplitter().feed(b"caf\xe9\n") == ["caf\ufffd"]


def test_store_records_output_and_finds_the_newest(tmp_path: Path):
    store = BuildStore(tmp_path)
    first = store.create("myapp", source="git", source_version="a" * 40, user="local")
    second = store.create("myapp", source="tarball")
    log = store.open_log(second, cap_bytes=30)
    log.line("-----> Python app detected")
    log.line("this line passes the cap")
    log.close()
    store.finish(second, status="failed", error="boom")
    assert [b.id for b in store.list("myapp")] == [first.id, second.id]
    assert store.get("myapp").status == "failed"
    assert store.output("myapp").startswith("-----> Python app detected\n[dynod: output after")
    with pytest.raises(NotFound):
        store.get("myapp", "../../etc/passwd")
    with pytest.raises(NotFound, match="has no builds yet"):
        store.get("otherapp")


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def member(name: str, data: bytes = b"x", **kw) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    for key, value in kw.items():
        setattr(info, key, value)
    if info.isreg():
        info.size = len(data)
        return info, data
    return info, None


def test_unpack_source(tmp_path: Path):
    archive = tar_of([member("./Procfile", b"web: x\n"), member("bin/run", b"#!/bin/sh\n", mode=0o755),
                      member("link", type=tarfile.SYMTYPE, linkname="bin/run")])
    unpack_source(archive, tmp_path, uid=os.getuid(), gid=os.getgid())
    assert (tmp_path / "Procfile").read_text() == "web: x\n"
    assert os.access(tmp_path / "bin/run", os.X_OK) and os.readlink(tmp_path / "link") == "bin/run"


@pytest.mark.parametrize("members", [
    [member("../escape")],
    [member("/etc/evil")],
    [member("d", type=tarfile.SYMTYPE, linkname="/etc"), member("d/passwd")],
])
def test_unpack_source_refuses_paths_that_leave_the_app(tmp_path: Path, members):
    (tmp_path / "app").mkdir()
    with pytest.raises(UserError, match="'..' component|absolute path|lies beneath d"):
        unpack_source(tar_of(members), tmp_path / "app", uid=os.getuid(), gid=os.getgid())
    assert not (tmp_path / "escape").exists()


def test_unpack_source_refuses_what_is_not_a_tarball(tmp_path: Path):
    with pytest.raises(UserError, match="not a readable tar archive"):
        unpack_source(io.BytesIO(b"PK\x03\x04 a zip"), tmp_path, uid=0, gid=0)


def test_an_overlong_build_id_is_not_found_not_an_os_error(tmp_path: Path):
    with pytest.raises(NotFound, match="build ids are like"):
        BuildStore(tmp_path).get("myapp", "a" * 5000)
