"""Log stream throughput: lines/s from 1 and from 20 writers to a tail and to a drain.

Each writer is a separate process writing 100-byte lines into a pipe as fast as the pipe takes
them; the stream pumps every pipe. The sink is either a `--tail` reader in the same process (as
the API would run it) or a syslog drain whose receiver is another process counting octet-counted
frames. Reported: lines/s into the stream, what reached the sink, and what was dropped and said
(L11 lines for the tail, L10 counts for the drain).

    .venv/bin/python bench/logs/bench_logs.py [--lines 200000] [--runs 3] [--rates 100000,0]
        [--writers 1,20] [--sinks tail,drain]

With ``--runs N`` each case runs N times and the median (by delivered lines) is printed with the
range of drops. Two peers run in the same process, on the same host load, for comparison:
``pipe`` (the same writers read by a plain loop of blocking reads, nothing parsed: what the
writers and pipes can do) and ``relay`` (the same writers' bytes, framed once up front by the
same framing code, written by a plain blocking sender into the same receiver: what the receiver
can take, with back-pressure instead of a bounded buffer, so it never drops).
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
from dynod.logplex.egress import DrainEgress  # noqa: E402

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
        # The receiver listens on loopback, which drains may only reach when local drains are allowed.
        ls = LogStream(Path(tmp), backoff_min=0.05, drain_egress=DrainEgress(allow_local=True))
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
                with trio.move_on_after(10) as warm_up:
                    while not ls.statistics()["drains"][0]["sent"]:
                        await trio.sleep(0.01)
                if warm_up.cancelled_caught:
                    error = ls.statistics()["drains"][0]["last_error"]
                    receiver.kill()
                    raise SystemExit(f"the drain never reached the bench's receiver: {error}")
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


def pipe_peer(writers: int, total_lines: int, width: int, rate: float) -> dict:
    """The same writers read by a plain blocking loop: the lines/s the writers and pipes reach."""
    import selectors

    per_writer = total_lines // writers
    procs = spawn_writers(writers, per_writer, width, rate / writers)
    started = time.perf_counter()
    sel = selectors.DefaultSelector()
    for _, fd in procs:
        sel.register(fd, selectors.EVENT_READ)
    newlines = 0
    open_fds = len(procs)
    while open_fds:
        for key, _ in sel.select():
            data = os.read(key.fd, 1 << 16)
            if data:
                newlines += data.count(b"\n")
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
                open_fds -= 1
    elapsed = time.perf_counter() - started
    for proc, _ in procs:
        proc.wait()
    return {"lines": per_writer * writers, "seconds": round(elapsed, 3), "lines_per_s": round(newlines / elapsed),
            "delivered": newlines, "dropped": 0}


def relay_peer(total_lines: int, width: int) -> dict:
    """Framed lines written by a plain blocking sender into the bench's receiver: what it takes."""
    import socket

    from dynod.logplex.format import line_prefix
    from dynod.logplex.syslog import frames

    pad = "x" * (width - 20)
    prefix = line_prefix(time.time(), "app", "web.1")
    data = frames([f"{prefix}{j:12d} {pad}" for j in range(total_lines)], "d.00000000-0000-0000-0000-000000000000")
    receiver = subprocess.Popen([sys.executable, "-I", "-S", "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    port = int(receiver.stdout.readline())
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        out, _ = receiver.communicate(timeout=120)
    elapsed = time.perf_counter() - started
    frames_seen = int(out.split()[-1])
    return {"lines": total_lines, "seconds": round(elapsed, 3), "lines_per_s": round(frames_seen / elapsed),
            "delivered": frames_seen, "dropped": 0}


def median_run(results: list[dict]) -> dict:
    """The run with the median delivered count, with every run's drops alongside."""
    ordered = sorted(results, key=lambda r: (r["delivered"], r["lines_per_s"]))
    picked = dict(ordered[len(ordered) // 2])
    picked["all_dropped"] = [r["dropped"] for r in results]
    picked["all_deferrals"] = [r.get("deferrals", 0) for r in results]
    return picked


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="total lines per case")
    parser.add_argument("--width", type=int, default=100, help="bytes per line, newline included")
    parser.add_argument("--rates", default="100000,0",
                        help="aggregate paced lines/s to run, comma-separated; 0 = unpaced maximum")
    parser.add_argument("--runs", type=int, default=1, help="runs per case; the median is printed")
    parser.add_argument("--writers", default="1,20", help="writer counts, comma-separated")
    parser.add_argument("--sinks", default="tail,drain", help="sinks: tail, drain, and the peers pipe, relay")
    args = parser.parse_args()
    if args.runs < 1 or args.lines < 20 or args.width < 21:
        parser.error("--runs must be >= 1, --lines >= 20 and --width >= 21")
    sinks = [s for s in args.sinks.split(",") if s]
    unknown = set(sinks) - {"tail", "drain", "pipe", "relay"}
    if unknown:
        parser.error(f"unknown sink(s) {', '.join(sorted(unknown))}; use tail, drain, pipe, relay")
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    print(f"{'paced':>7} {'writers':>7} {'sink':>5} {'lines':>8} {'seconds':>8} {'lines/s':>9} {'delivered':>9} "
          f"{'dropped':>8} {'notices':>8}  runs: dropped / deferrals")
    for rate in (float(r) for r in args.rates.split(",")):
        for writers in (int(w) for w in args.writers.split(",")):
            for sink in sinks:
                if sink == "relay" and writers != int(args.writers.split(",")[0]):
                    continue  # the receiver's capacity does not depend on the writers
                results = []
                for _ in range(args.runs):
                    if sink == "pipe":
                        results.append(pipe_peer(writers, args.lines, args.width, rate))
                    elif sink == "relay":
                        results.append(relay_peer(args.lines, args.width))
                    else:
                        results.append(await run_case(writers, args.lines, sink, args.width, rate))
                r = median_run(results)
                notices = r.get("l11_lines", "L10" if r["dropped"] else "-") if sink in ("tail", "drain") else "peer"
                paced = "max" if not rate or sink == "relay" else f"{rate / 1000:g}k"
                print(f"{paced:>7} {writers if sink != 'relay' else '-':>7} {sink:>5} {r['lines']:>8} "
                      f"{r['seconds']:>8} {r['lines_per_s']:>9} {r['delivered']:>9} {r['dropped']:>8} "
                      f"{notices!s:>8}  {r['all_dropped']} / {r['all_deferrals']}", flush=True)


if __name__ == "__main__":
    import trio.testing  # noqa: F401 - used by run_case

    trio.run(main)
