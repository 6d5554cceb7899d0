"""Log stream throughput: lines/s from 1 and from 20 writers to a tail and to a drain.

Each writer is a separate process writing 100-byte lines into a pipe as fast as the pipe takes
them; the stream pumps every pipe. The sink is either a `--tail` reader in the same process (as
the API would run it) or a syslog drain whose receiver is another process counting octet-counted
frames. Reported: lines/s into the stream, what reached the sink, and what was dropped and said
(L11 lines for the tail, L10 counts for the drain).

    .venv/bin/python bench/logs/bench_logs.py [--lines 200000] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dynod.logplex import LogStream  # noqa: E402

WRITER = r"""
import sys, time
n, width, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
w = sys.stdout.buffer.write
pad = b"x" * (width - 20)
block = 500
start_at = time.monotonic()
i = 0
while i < n:
    # Paced: write what is due by now, in small steps (a 1 ms tick); unpaced (rate 0): 500 at a time.
    due = n if rate <= 0 else min(n, int((time.monotonic() - start_at) * rate) + 1)
    if due <= i:
        time.sleep(0.001)
        continue
    end = min(due, i + block)
    w(b"".join(b"%12d %s\n" % (j, pad) for j in range(i, end)))
    sys.stdout.flush()
    i = end
"""

RECEIVER = r"""
import socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
buf = b""
frames = 0
while True:
    data = conn.recv(1 << 20)
    if not data:
        break
    buf += data
    pos = 0
    while True:
        sp = buf.find(b" ", pos, pos + 12)
        if sp < 0:
            break
        end = sp + 1 + int(buf[pos:sp])
        if end > len(buf):
            break
        frames += 1
        pos = end
    buf = buf[pos:]
print(frames, flush=True)
"""

L11 = re.compile(r"dropped (\d+) messages since")


def spawn_writers(count: int, lines: int, width: int, rate: float) -> list[tuple[subprocess.Popen, int]]:
    out = []
    for _ in range(count):
        r, w = os.pipe()
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", WRITER, str(lines), str(width), str(rate)],
                                stdout=w, close_fds=True)
        os.close(w)
        out.append((proc, r))
    return out


async def run_case(writers: int, total_lines: int, sink: str, width: int, rate: float) -> dict:
    """``rate``: aggregate lines/s the writers are paced at (0: as fast as they can)."""
    per_writer = total_lines // writers
    with tempfile.TemporaryDirectory() as tmp:
        ls = LogStream(Path(tmp), backoff_min=0.05)
        result: dict = {"writers": writers, "sink": sink, "lines": per_writer * writers, "rate": rate}
        receiver = None
        tail_seen = 0
        tail_dropped = 0
        tail_l11 = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(ls.run)
            if sink == "drain":
                receiver = subprocess.Popen([sys.executable, "-I", "-S", "-c", RECEIVER],
                                            stdout=subprocess.PIPE, text=True)
                port = int(receiver.stdout.readline())
                ls.add_drain("benchapp", f"syslog://127.0.0.1:{port}")
                ls.emit("benchapp", "dynod", "api", "warm-up")
                while not ls.statistics()["drains"][0]["sent"]:
                    await trio.sleep(0.01)
            done = trio.Event()

            async def tail() -> None:
                nonlocal tail_seen, tail_dropped, tail_l11
                # As the API serves a tail: a batch at a time, each joined into one write.
                async for batch in ls.tail_batches("benchapp", 0):
                    chunk = "\n".join(batch) + "\n"
                    app_lines = chunk.count(" app[")
                    tail_seen += app_lines
                    if app_lines < len(batch):
                        for m in L11.finditer(chunk):
                            tail_l11 += 1
                            tail_dropped += int(m.group(1))
                    if done.is_set():
                        return

            if sink == "tail":
                nursery.start_soon(tail)
                await trio.testing.wait_all_tasks_blocked()
            procs = spawn_writers(writers, per_writer, width, rate / writers)
            started = time.perf_counter()
            async with trio.open_nursery() as pumps:
                for i, (_, fd) in enumerate(procs):
                    pumps.start_soon(ls.pump, "benchapp", f"web.{i + 1}", fd)
            elapsed = time.perf_counter() - started
            for proc, _ in procs:
                proc.wait()
            done.set()
            if sink == "tail":
                ls.emit("benchapp", "dynod", "api", "end")  # wakes the reader so it sees `done`
                await trio.sleep(0.2)
            if sink == "drain":
                with trio.move_on_after(10):
                    while ls.statistics()["drains"][0]["buffered"]:
                        await trio.sleep(0.01)
                stats = ls.statistics()["drains"][0]
            nursery.cancel_scope.cancel()
        app_in = ls.statistics()["lines_in"]
        result["lines_per_s"] = round(result["lines"] / elapsed)
        result["seconds"] = round(elapsed, 3)
        if sink == "tail":
            result.update(delivered=tail_seen, dropped=tail_dropped, l11_lines=tail_l11)
        if sink == "drain" and receiver is not None:
            # The stream has stopped, so the drain connection is closed: the receiver prints its count.
            try:
                out, _ = receiver.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                receiver.kill()
                out, _ = receiver.communicate()
            frames = int(out.split()[-1]) if out.split() else 0
            result.update(delivered=frames, dropped=stats["dropped"], drain_sent=stats["sent"],
                          eager=stats["eager"], deferrals=stats["deferrals"])
        assert app_in >= result["lines"], (app_in, result)
        return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="total lines per case")
    parser.add_argument("--width", type=int, default=100, help="bytes per line, newline included")
    parser.add_argument("--rates", default="100000,0",
                        help="aggregate paced lines/s to run, comma-separated; 0 = unpaced maximum")
    args = parser.parse_args()
    print(f"{'paced':>7} {'writers':>7} {'sink':>5} {'lines':>8} {'seconds':>8} {'lines/s':>9} {'delivered':>9} "
          f"{'dropped':>8} {'notices':>8}")
    for rate in (float(r) for r in args.rates.split(",")):
        for writers in (1, 20):
            for sink in ("tail", "drain"):
                r = await run_case(writers, args.lines, sink, args.width, rate)
                notices = r.get("l11_lines", "L10" if r["dropped"] else "-")
                paced = f"{rate / 1000:g}k" if rate else "max"
                print(f"{paced:>7} {r['writers']:>7} {r['sink']:>5} {r['lines']:>8} {r['seconds']:>8} "
                      f"{r['lines_per_s']:>9} {r['delivered']:>9} {r['dropped']:>8} {notices!s:>8}", flush=True)


if __name__ == "__main__":
    import trio.testing  # noqa: F401 - used by run_case

    trio.run(main)
