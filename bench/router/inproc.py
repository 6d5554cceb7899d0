"""The proxy's own per-request Python cost, without sockets, scheduling waits or other processes.

    .venv/bin/python bench/router/inproc.py [--requests 20000] [--runs 5]

One client connection sends keep-alive GETs to a Proxy whose dyno connections are in-memory pipes that
answer at once with an nginx-like response; the figure is the worker's CPU time per request (median of
the runs), which the wrk bench cannot show on a shared 2-core host where everything else moves it more.
Log lines are formatted as the worker's batches are, and counted in.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dynod.router import pool as pool_module  # noqa: E402
from dynod.router.options import RouterOptions  # noqa: E402
from dynod.router.proxy import Proxy  # noqa: E402
from dynod.router.routes import RouteTable  # noqa: E402
from dynod.router.worker import LogBatcher  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: bench.localhost\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 14:55:23 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 18\r\nConnection: keep-alive\r\n\r\nhello from a dyno\n")


class ClientPipe:
    """Sends ``count`` requests, one per read, then closes."""

    def __init__(self, count: int) -> None:
        self.left = count

    async def recv(self) -> bytes:
        self.left -= 1
        return REQUEST if self.left >= 0 else b""

    recv_later = recv

    async def send_all(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _QuietSocket:
    """What the pool's liveness check sees: an open connection with nothing to read."""

    def fileno(self) -> int:
        return 1000

    def recv(self, size: int, flags: int) -> bytes:
        raise BlockingIOError


class DynoPipe:
    sock = _QuietSocket()

    async def recv(self) -> bytes:
        return RESPONSE

    recv_later = recv

    async def send_all(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


async def connect_in_memory(host: str, port: int, timeout: float) -> DynoPipe:
    return DynoPipe()


async def one_run(count: int) -> float:
    with tempfile.TemporaryDirectory(prefix="dynod-inproc-") as tmp:
        options = RouterOptions(control=Path(tmp) / "control", state_dir=Path(tmp))
        logs = LogBatcher(count + 1)
        proxy = Proxy(options, logs.emit)
        proxy.set_routes(RouteTable.from_snapshot({"bench": {"dynos": [
            {"name": f"web.{i}", "addr": f"198.18.0.{i}:5000"} for i in (1, 2, 3)]}}, "localhost"))
        t0 = time.process_time()
        await proxy.serve(ClientPipe(count), "127.0.0.1", "http", 8080)
        lines = logs.take_batch().count(b"\n")
        spent = time.process_time() - t0
        assert proxy.requests == count and lines == count, (proxy.requests, lines)
        return spent / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    pool_module.connect_tcp = connect_in_memory  # type: ignore[assignment]
    runs = [trio.run(one_run, args.requests) for _ in range(args.runs)]
    print(f"proxy Python per request: {median(runs) * 1e6:.1f} us (median of {args.runs} runs of "
          f"{args.requests}: {', '.join(f'{r * 1e6:.1f}' for r in runs)})")


if __name__ == "__main__":
    main()
