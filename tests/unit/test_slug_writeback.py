"""The pack's writer starts the disk on what it has written (sync_file_range) as it goes; where
the kernel says no, it writes on as before and the fsync at the end does it all."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from dynod.builds import slug
from dynod.linux import syscalls


def _chunks() -> list[bytes]:
    return [os.urandom(n) for n in (1000, slug.WRITEBACK_EVERY, 3, slug.WRITEBACK_EVERY + 5, 70_000)]


def test_a_file_written_with_writeback_holds_the_same_bytes_and_hash(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[int, int]] = []
    real = slug.start_writeback

    def recording(fd: int, offset: int, nbytes: int) -> None:
        started.append((offset, nbytes))
        real(fd, offset, nbytes)  # the real call, on a real file

    monkeypatch.setattr(slug, "start_writeback", recording)
    chunks = _chunks()
    with open(tmp_path / "slug.tgz", "wb") as out:
        writer = slug._HashingWriter(out, 1 << 30, writeback=True)
        for chunk in chunks:
            writer.write(chunk)
        writer.flush()
    data = b"".join(chunks)
    assert (tmp_path / "slug.tgz").read_bytes() == data
    assert writer.sha.hexdigest() == hashlib.sha256(data).hexdigest() and writer.size == len(data)
    # each range follows the last, none is empty, and together they cover what was written by then
    assert started and started[0][0] == 0
    for (offset, nbytes), (next_offset, _) in zip(started, started[1:], strict=False):
        assert nbytes >= slug.WRITEBACK_EVERY and next_offset == offset + nbytes
    assert sum(n for _, n in started) <= len(data)


def test_where_the_kernel_refuses_writeback_the_writer_writes_on(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()  # sync_file_range on a pipe: ESPIPE
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 20):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    chunks = _chunks()
    with os.fdopen(write_end, "wb") as out:
        writer = slug._HashingWriter(out, 1 << 30, writeback=True)
        for chunk in chunks:
            writer.write(chunk)
        writer.flush()
    reader.join()
    os.close(read_end)
    assert bytes(received) == b"".join(chunks)
    assert writer._writeback is False  # tried once, refused, not again


def test_start_writeback_raises_the_kernels_refusal_as_an_oserror() -> None:
    read_end, write_end = os.pipe()
    try:
        try:
            syscalls.start_writeback(write_end, 0, 4096)
        except OSError as exc:
            assert exc.errno is not None
        else:
            raise AssertionError("sync_file_range accepted a pipe")
    finally:
        os.close(read_end)
        os.close(write_end)
