"""Router benchmark: wrk through the router, direct to one dyno, and through nginx, in one run.

    sudo .venv/bin/python bench/router/bench.py [--duration 10] [--connections 64] [--workers 2] [--rounds 1]
        [--body-size BYTES] [--upload-size BYTES] [--python-plane]

The three dynos are one small nginx serving three loopback ports (a fast, steady backend, so the
figures are about the proxies). The peer is nginx with `random` and keepalive upstreams to the same
three ports. Everything listens on 127.0.0.1, runs from a temp dir and is stopped afterwards.
``--body-size`` makes every response body that long (a static file the dynos send with sendfile);
``--upload-size`` makes every request a POST with a body that long (wrk's Lua hook).
``--python-plane`` also runs a second router whose plain-HTTP plane parses in Python only
(``DYNOD_ROUTER_PLANE=python``), measured in the same rounds: the C parse against the Python one.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dynod.router import RouterControl  # noqa: E402
from dynod.router.routes import AppRoute  # noqa: E402

BODY = "hello from a dyno\\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def start_nginx(tmp: Path, name: str, servers: str, workers: int) -> subprocess.Popen[bytes]:
    conf = tmp / f"{name}.conf"
    conf.write_text(f"""
worker_processes {workers};
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    keepalive_requests 1000000;
    client_max_body_size 0;
{servers}
}}
""")
    return subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(conf)])


def cpu_seconds(pids: list[int], user_only: bool = False) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + (0 if user_only else int(fields[12]))  # utime + stime
    return total / tick


def wrk(url: str, host: str | None, duration: int, connections: int, script: Path | None = None) -> dict[str, Any]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if host:
        cmd[1:1] = ["-H", f"Host: {host}"]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * unit[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": latency("50"), "p99": latency("99"), "requests": total,
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else "none"}


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dynod-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    controls: list[RouterControl] = []
    try:
        dyno_ports = [free_port() for _ in range(3)]
        # nginx's workers run as nobody: they must reach their body buffers (a 1 MB upload or
        # response is buffered to a file) and the static body through the private temp dir.
        tmp.chmod(0o711)
        answer = f"default_type text/plain; return 200 \"{BODY}\";"
        if args.body_size:
            (tmp / "www").mkdir()
            (tmp / "www" / "body").write_bytes(b"x" * args.body_size)
            (tmp / "www").chmod(0o755)
            (tmp / "www" / "body").chmod(0o644)
            answer = f"root {tmp}/www; try_files /body =404;"  # GET only; a POST to a file is 405
        servers = "    sendfile on;\n" + "\n".join(
            f"    server {{ listen 127.0.0.1:{p}; location / {{ {answer} }} }}" for p in dyno_ports)
        script = None
        if args.upload_size:
            script = tmp / "upload.lua"
            script.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {args.upload_size})\n'
                              'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        procs.append(start_nginx(tmp, "dynos", servers, 1))
        for p in dyno_ports:
            wait_port(p)

        router_port, nginx_port = free_port(), free_port()

        async def start_router(name: str, port: int, python_plane: bool) -> tuple[RouterControl, list[int]]:
            argv = [sys.executable, "-m", "dynod.router", "--control", str(tmp / f"{name}.sock"),
                    "--http", f"127.0.0.1:{port}", "--state-dir", str(tmp / name), "--workers", str(args.workers)]
            if python_plane:
                os.environ["DYNOD_ROUTER_PLANE"] = "python"  # the router's workers inherit it
            try:
                started = await RouterControl.connect_or_start(control_path=tmp / f"{name}.sock", argv=argv)
            finally:
                os.environ.pop("DYNOD_ROUTER_PLANE", None)
            controls.append(started)
            await started.push_routes([AppRoute.from_wire("bench", {"domains": [], "dynos": [
                {"name": f"web.{i + 1}", "addr": f"127.0.0.1:{p}"} for i, p in enumerate(dyno_ports)]})])
            stats = await started.statistics()
            return started, [started.pid] + [w["pid"] for w in stats["workers"]]

        control, router_pids = await start_router("router", router_port, False)
        python_port = free_port()
        if args.python_plane:
            python_control, python_pids = await start_router("router-py", python_port, True)
        log_lines = 0

        async def read_logs(source: RouterControl) -> None:  # as dynod does: every request's log line is received
            nonlocal log_lines
            async for _app, _line in source.receive_logs():
                log_lines += 1

        upstream = "\n".join(f"        server 127.0.0.1:{p};" for p in dyno_ports)
        procs.append(start_nginx(tmp, "peer", f"""
    upstream dynos {{
        random;
{upstream}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{nginx_port};
        location / {{
            proxy_pass http://dynos;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""", args.workers))
        wait_port(nginx_port)

        rounds: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_logs, control)
            if args.python_plane:
                nursery.start_soon(read_logs, python_control)
            # Warm up (pools, caches), then measure; wrk runs in a thread so logs keep flowing. Each
            # round measures the three back to back, so a ratio compares runs on the same busy host.
            run_wrk = trio.to_thread.run_sync
            await run_wrk(wrk, f"http://127.0.0.1:{router_port}/", "bench.localhost", 2, args.connections, script)
            if args.python_plane:
                await run_wrk(wrk, f"http://127.0.0.1:{python_port}/", "bench.localhost", 2, args.connections,
                              script)
            await run_wrk(wrk, f"http://127.0.0.1:{nginx_port}/", None, 2, args.connections, script)

            async def measure_router(port: int, pids: list[int]) -> dict[str, Any]:
                cpu0 = cpu_seconds(pids)
                user0 = cpu_seconds(pids, user_only=True)
                parent0 = cpu_seconds(pids[:1])
                result = await run_wrk(wrk, f"http://127.0.0.1:{port}/", "bench.localhost", args.duration,
                                       args.connections, script)
                result["cpu_us"] = (cpu_seconds(pids) - cpu0) / result["requests"] * 1e6
                # User time is the router's own code (Python, trio, llhttp); system time is mostly the
                # kernel's loopback TCP, which no event loop avoids.
                result["user_us"] = (cpu_seconds(pids, user_only=True) - user0) / result["requests"] * 1e6
                result["parent_us"] = (cpu_seconds(pids[:1]) - parent0) / result["requests"] * 1e6
                return result

            for _ in range(args.rounds):
                entry = {"router": await measure_router(router_port, router_pids)}
                if args.python_plane:
                    entry["python"] = await measure_router(python_port, python_pids)
                entry["direct"] = await run_wrk(wrk, f"http://127.0.0.1:{dyno_ports[0]}/", None, args.duration,
                                                args.connections, script)
                entry["nginx"] = await run_wrk(wrk, f"http://127.0.0.1:{nginx_port}/", None, args.duration,
                                               args.connections, script)
                rounds.append(entry)
            workers = (await control.statistics())["workers"]
            per_worker = [w["requests"] for w in workers]
            in_plane = sum(w.get("plane_requests", 0) for w in workers)  # absent in trees before the plane
            in_c = sum(w.get("plane_requests_c", 0) for w in workers), sum(w.get("plane_responses_c", 0)
                                                                            for w in workers)
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()

        print(f"wrk -t2 -c{args.connections} -d{args.duration}s, router workers={args.workers}, "
              f"{os.cpu_count()} CPUs, {args.rounds} round(s): medians; response body "
              f"{args.body_size or len(BODY) - 1} B, request body {args.upload_size} B; load average "
              f"{os.getloadavg()[0]:.1f} at the end")
        print(f"{'target':<26}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}  errors (all rounds)")
        targets = [("router", "router -> 3 dynos")]
        if args.python_plane:
            targets.append(("python", "router, Python-only plane"))
        for key, name in targets + [("direct", "direct -> 1 dyno"), ("nginx", "nginx random+keepalive")]:
            runs = [r[key] for r in rounds]
            errors = sum(r["non2xx"] for r in runs)
            sockets = sorted({r["socket_errors"] for r in runs})
            print(f"{name:<26}{median(r['rps'] for r in runs):>10.0f}{median(r['p50'] for r in runs):>9.2f}"
                  f"{median(r['p99'] for r in runs):>9.2f}  non2xx={errors} socket={', '.join(sockets)}")
        print(f"router CPU per request: {median(r['router']['cpu_us'] for r in rounds):.1f} us "
              f"(user {median(r['router']['user_us'] for r in rounds):.1f} us; "
              f"parent {median(r['router']['parent_us'] for r in rounds):.1f} us)  (aim <= 30 us)")
        if args.python_plane:
            print(f"Python-only plane CPU per request: {median(r['python']['cpu_us'] for r in rounds):.1f} us "
                  f"(user {median(r['python']['user_us'] for r in rounds):.1f} us); its req/s / nginx: "
                  f"{median(r['python']['rps'] / r['nginx']['rps'] for r in rounds):.1%}, p99 over nginx: "
                  f"{median(r['python']['p99'] - r['nginx']['p99'] for r in rounds):.2f} ms")
        print(f"router log lines received: {log_lines}; requests per worker (incl. warm-up): {per_worker}, "
              f"{in_plane} started in the plain-HTTP plane ({in_c[0]} requests and {in_c[1]} responses parsed in C)")
        print(f"router/nginx req/s: {median(r['router']['rps'] / r['nginx']['rps'] for r in rounds):.1%}"
              "  (aim >= 50%)")
        print(f"router/direct req/s: {median(r['router']['rps'] / r['direct']['rps'] for r in rounds):.1%}")
        print(f"p99 added by the router over direct: "
              f"{median(r['router']['p99'] - r['direct']['p99'] for r in rounds):.2f} ms; over nginx: "
              f"{median(r['router']['p99'] - r['nginx']['p99'] for r in rounds):.2f} ms  (aim <= 2 ms)")
        if args.rounds > 1:
            print("rounds (router req/s, nginx req/s, router p99, nginx p99): " + "; ".join(
                f"{r['router']['rps']:.0f}, {r['nginx']['rps']:.0f}, {r['router']['p99']:.1f}, "
                f"{r['nginx']['p99']:.1f}" for r in rounds))
    finally:
        for started in controls:
            await started.stop_router()
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="measure this many times; medians are shown")
    parser.add_argument("--body-size", type=int, default=0, help="response body bytes (default: 18)")
    parser.add_argument("--upload-size", type=int, default=0, help="request body bytes: POSTs (default: GETs)")
    parser.add_argument("--python-plane", action="store_true",
                        help="also measure a router whose plane parses in Python only (DYNOD_ROUTER_PLANE=python)")
    args = parser.parse_args()
    if args.body_size and args.upload_size:
        parser.error("--body-size and --upload-size are separate cases: pass one")
    # wrk and nginx hold a socket per connection (and the router two): 1,000 connections need more
    # than the usual 1,024 descriptors; the children inherit this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(run, args)


if __name__ == "__main__":
    main()
