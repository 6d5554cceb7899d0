"""Pumps over real pipes fed by real processes: order, splitting, EOF, fairness, fd ownership."""

import os
import subprocess
import sys
import time

import pytest
import trio

from dynod.logplex import LogStream
from dynod.logplex.format import parse_line

pytestmark = pytest.mark.integration


def messages(lines):
    return [parse_line(line).message for line in lines]


def spawn_writer(script: str) -> tuple[subprocess.Popen, int]:
    """A child process writing to a pipe whose read end the test hands to the stream."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", script], stdout=write_fd, close_fds=True)
    os.close(write_fd)
    return proc, read_fd


async def test_one_dynos_lines_keep_their_order_and_fd_is_closed(tmp_path):
    ls = LogStream(tmp_path, lines=20_000)
    proc, fd = spawn_writer(
        "import sys\nw=sys.stdout.buffer.write\n"
        "for i in range(20000): w(b'seq %d\\n' % i)\n"
    )
    await ls.pump("myapp", "web.1", fd)
    assert proc.wait(timeout=10) == 0
    assert messages(ls.recent("myapp", 20_000)) == [f"seq {i}" for i in range(20_000)]
    with pytest.raises(OSError):  # the stream owns the fd and closed it at EOF
        os.fstat(fd)


async def test_long_lines_binary_and_last_line_without_newline(tmp_path):
    ls = LogStream(tmp_path)
    proc, fd = spawn_writer(
        "import sys\nw=sys.stdout.buffer.write\n"
        "w(b'x'*25000 + b'\\n')\n"
        "w(b'bin \\x00\\xff\\x1b[1m\\n')\n"
        "w(b'no newline at the end')\n"
    )
    await ls.pump("myapp", "worker.1", fd)
    proc.wait(timeout=10)
    got = ls.recent("myapp")
    assert [len(m) for m in messages(got[:3])] == [10_000, 10_000, 5_000]
    assert messages(got[3:]) == ["bin \\x00\\xff\x1b[1m", "no newline at the end"]
    assert all(line.split(" ", 1)[1].startswith("app[worker.1]: ") for line in got)


async def test_cancelled_pump_still_closes_fd_and_keeps_partial_line(tmp_path):
    ls = LogStream(tmp_path)
    read_fd, write_fd = os.pipe()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ls.pump, "myapp", "web.1", read_fd)
            os.write(write_fd, b"complete\nhalf")
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    finally:
        os.close(write_fd)
    assert messages(ls.recent("myapp")) == ["complete", "half"]
    with pytest.raises(OSError):
        os.fstat(read_fd)


async def test_flooding_app_does_not_delay_another_apps_lines(tmp_path):
    ls = LogStream(tmp_path)
    flooders = [spawn_writer(
        "import sys\nw=sys.stdout.buffer.write\nline=b'flood '*20+b'\\n'\n"
        "while True: w(line*200)\n") for _ in range(4)]
    latencies = []

    async def quiet_reader():
        async for line in ls.tail("quiet-app", 0):
            parsed = parse_line(line)
            sent = float(parsed.message)
            latencies.append(time.time() - sent)

    try:
        async with trio.open_nursery() as nursery:
            for i, (_, fd) in enumerate(flooders):
                nursery.start_soon(ls.pump, "noisy-app", f"web.{i + 1}", fd)
            nursery.start_soon(quiet_reader)
            quiet_read, quiet_write = os.pipe()
            nursery.start_soon(ls.pump, "quiet-app", "web.1", quiet_read)
            await trio.sleep(0.3)  # let the flood get going
            for _ in range(20):
                os.write(quiet_write, f"{time.time()}\n".encode())
                await trio.sleep(0.02)
            os.close(quiet_write)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    finally:
        for proc, _ in flooders:
            proc.kill()
            proc.wait()
    noisy = ls.statistics()["lines_in"] - 20
    assert noisy > 10_000, "the flood did flow"
    assert len(latencies) == 20
    assert max(latencies) < 0.1, latencies
