"""Cost growth: what dynod costs as idle dynos pile up, at 0, 100, 500 and 1,000 of them.

    sudo .venv/bin/python bench/scale/bench_scale.py [--levels 0,100,500,1000] [--apps 10] [--runs 10]

Starts a private dynod (its own state dir, cgroup subtree, bridge, a /21 of dyno addresses, build
subnet, nftables table and a router on loopback ports), deploys ``--apps`` apps whose idle process is
``sleep infinity`` and a probe app, then for each level N (dynos spread evenly over the apps):
1. platform memory: the RSS of dynod, its spawner and its router (every process of the private
   dynod's tree; the log stream is part of dynod), growth over the 0-dyno level per dyno, and the
   kernel-side cost the host's /proc/meminfo attributes (slab, per-cpu, kernel stacks, page tables:
   cgroups, namespaces, veths, pipes) per dyno; the median charge of one dyno's memory cgroup;
2. dyno start latency: scale request to the probe app's process running (its own clock), median;
3. `dynoctl ps` latency for the probe app (one dyno), the client's whole run, median; the API's
   own part of it (`GET /apps/probe/dynos` from this process), and the same for one loaded app;
4. a full dynod restart keeping the dynos (SIGTERM, and kill -9 with ``--kill9``), then a new dynod:
   the time from its start until the API shows every one of the N dynos `up` again;
5. the platform's CPU use while idle (dynod, spawner, router), over ``--idle-window`` seconds.
The peer is a twin: a second private dynod made the same way that only ever runs the probe's one
dyno. Latencies are sampled from the two in turn and the twin restarts right after the loaded one,
so a busy host slows both alike; the aims compare the loaded dynod with its twin (and the curve
also shows each figure against the loaded dynod's own at 0 dynos).
It prints each figure with its aim (issue 16) and whether it was met, then the curve. Everything it
made is removed at the end, interrupted or not (dynos, cgroups, veths, bridges, nft table, state dir).
The host is shared: read the load average printed beside the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from dynod.api.client import ApiClient  # noqa: E402

KERNEL_FIELDS = ("Slab", "Percpu", "KernelStack", "PageTables")
PROCFILE = ("clock: echo T0=$(date +%s%N); exec sleep infinity\n"
            "idle: exec sleep infinity\n")


def rss_kib(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def meminfo_kib() -> dict[str, int]:
    fields = {}
    for line in open("/proc/meminfo"):
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return fields


def free_subnets() -> tuple[str, str]:
    """A /21 in 198.18.0.0/16 and a /24 in 198.19.0.0/16 that no route on the host overlaps."""
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True,
                            text=True).stdout
    taken = []
    for word in routes.split():
        with contextlib.suppress(ValueError):
            if word.startswith("198.1"):
                taken.append(ipaddress.ip_network(word, strict=False))

    def free(candidates: list[ipaddress.IPv4Network]) -> str:
        options = [c for c in candidates if not any(c.overlaps(t) for t in taken)]
        if not options:
            raise SystemExit("no free subnet in 198.18.0.0/15 for the bench; remove a stale bridge")
        return str(secrets.choice(options))

    dynos = free([ipaddress.ip_network(f"198.18.{8 * k}.0/21") for k in range(1, 31)])
    builds = free([ipaddress.ip_network(f"198.19.{n}.0/24") for n in range(1, 251)])
    return dynos, builds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateDynod:
    def __init__(self, stacks: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dynod-scale-"))
        token = secrets.token_hex(2)
        self.bridge = f"dys{token}"
        self.cgroup_name = f"dynod-scale-{token}"
        self.socket = self.root / "run" / "api.sock"
        self.config = self.root / "dynod.toml"
        subnet, build_subnet = free_subnets()
        # Limits a bench of 1,000 small dynos needs, and why:
        # - memory_overcommit: the scale check adds up the sizes' quotas (512 MiB each), 500 GiB for
        #   1,000 dynos on a 24 GiB host, while an idle `sleep` dyno uses well under 1 MiB;
        # - a /21 of dyno addresses (2,045): a /24 holds only 253 dynos;
        # - tmpfs_size_mb: each dyno's tmpfs is a size cap only, but keep it small all the same;
        # - stop_timeout: `sleep` ends on SIGTERM; a short one keeps the teardown bounded anyway;
        # - metrics_interval stays at its default (20 s): its per-dyno sampling is part of the cost.
        self.config.write_text(f"""
state_dir = "{self.root / 'state'}"
run_dir = "{self.root / 'run'}"
stacks_path = "{stacks}"
[dynos]
stop_timeout = 2.0
tmpfs_size_mb = 8
memory_overcommit = 40.0
warm_pool = 0
[network]
subnet = "{subnet}"
bridge = "{self.bridge}"
build_subnet = "{build_subnet}"
[cgroups]
name = "{self.cgroup_name}"
[router]
http = ["127.0.0.1:{free_port()}"]
https = ["127.0.0.1:{free_port()}"]
workers = 1
""")
        self.env = {**os.environ, "DYNOD_SOCKET": str(self.socket)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(self.root / "dynod.log", "ab")

    def start(self) -> float:
        """Start dynod; the seconds until its API answers."""
        t0 = time.monotonic()
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen([str(BIN / "dynod"), "--config", str(self.config)], stdout=self.log,
                                     stderr=self.log, env=self.env, cwd=REPO)
        while time.monotonic() < t0 + 120:
            if self.proc.poll() is not None:
                raise SystemExit(f"dynod exited {self.proc.returncode}; see {self.root / 'dynod.log'}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket))
                return time.monotonic() - t0
            except OSError:
                time.sleep(0.01)
        raise SystemExit(f"dynod did not start; see {self.root / 'dynod.log'}")

    def end(self, how: signal.Signals) -> None:
        """End dynod only (its dynos, spawner and router keep running)."""
        assert self.proc is not None
        self.proc.send_signal(how)
        self.proc.wait(timeout=120)

    def client(self) -> ApiClient:
        return ApiClient(self.socket)

    def ctl(self, *args: str) -> None:
        subprocess.run([str(BIN / "dynoctl"), *args], env=self.env, check=True, capture_output=True)

    def processes(self) -> dict[str, int]:
        """RSS (KiB) of dynod, its spawner and its router processes."""
        found = {"dynod": 0, "spawner": 0, "router": 0}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                args = open(f"/proc/{entry.name}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(self.root) not in args or int(entry.name) == os.getpid():
                continue
            kind = ("dynod" if self.proc is not None and int(entry.name) == self.proc.pid
                    else "spawner" if "spawner" in args else "router" if "router" in args else None)
            if kind is not None:
                found[kind] += rss_kib(int(entry.name))
        return found

    def platform_pids(self) -> list[int]:
        """dynod, its spawner and its router processes (all that name this dynod's private dirs)."""
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if str(self.root).encode() in open(f"/proc/{entry.name}/cmdline", "rb").read():
                        found.append(int(entry.name))
        return found

    def close(self) -> None:
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.start()  # a dynod that knows the dynos is what stops them cleanly
            with self.client() as client:
                client.request("POST", "/shutdown", {"stop_dynos": True})
            assert self.proc is not None
            self.proc.wait(timeout=300)
        except BaseException as exc:  # noqa: BLE001 - whatever went wrong, the host is cleaned below
            print(f"shutdown failed ({exc!r}): removing what is left by hand", file=sys.stderr)
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
        finally:
            self.force_cleanup()
            self.log.close()
            shutil.copy(self.root / "dynod.log", Path(tempfile.gettempdir()) / "dynod-scale-last.log")
            shutil.rmtree(self.root, ignore_errors=True)

    def force_cleanup(self) -> None:
        """Whatever the shutdown left: processes of this dynod, its cgroups, links, table, mounts."""
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if str(self.root).encode() in open(f"/proc/{entry.name}/cmdline", "rb").read():
                        os.kill(int(entry.name), signal.SIGKILL)
        groups = []
        for base, dirs, _files in os.walk("/sys/fs/cgroup"):
            if os.path.basename(base) == self.cgroup_name:
                groups.append(base)
                dirs.clear()
            elif base.count("/") > 7:
                dirs.clear()
        for group in groups:
            for child in os.scandir(group):
                if child.is_dir():
                    for pid in open(os.path.join(child.path, "cgroup.procs")).read().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
        if groups:
            time.sleep(1)
        for group in groups:
            for child in os.scandir(group):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        os.rmdir(child.path)
            with contextlib.suppress(OSError):
                os.rmdir(group)
        for link in (self.bridge, self.bridge + "b"):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", f"dynod_{self.bridge}"], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(self.root)], capture_output=True)


def wait(predicate, timeout: float = 120.0, interval: float = 0.002):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit("timed out")


def all_up(client: ApiClient, apps: list[str], per_app: list[int]) -> bool:
    for app, count in zip(apps, per_app, strict=True):
        dynos = [x for x in client.list_dynos(app) if x["type"] == "idle"]
        if len(dynos) != count or any(x["state"] != "up" for x in dynos):
            return False
    return True


def spread(total: int, apps: int) -> list[int]:
    return [total // apps + (1 if i < total % apps else 0) for i in range(apps)]


def start_once(d: PrivateDynod, client: ApiClient, app: str) -> float:
    """One start of the probe app's clock dyno: scale request to its process running (its clock), ms."""
    t0 = time.time_ns()
    client.update_formation(app, [{"type": "clock", "quantity": 1}])
    line = wait(lambda: next((x for x in client.log_lines(app, 1500, "clock", "app") if "T0=" in x
                              and int(x.split("T0=")[1]) > t0), None))
    client.update_formation(app, [{"type": "clock", "quantity": 0}])
    wait(lambda: not [x for x in client.list_dynos(app) if x["type"] == "clock"])
    return (int(line.split("T0=")[1]) - t0) / 1e6


def ps_once(d: PrivateDynod, app: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "dynoctl"), "ps", "-a", app], env=d.env, check=True, capture_output=True)
    return (time.perf_counter() - t0) * 1000


def api_list_once(client: ApiClient, app: str) -> float:
    t0 = time.perf_counter()
    client.list_dynos(app)
    return (time.perf_counter() - t0) * 1000


def interleaved(runs: int, loaded, twin) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Medians of ``runs`` samples of each, taken in turn, so the host's load hits both alike."""
    a, b = [], []
    for _ in range(runs):
        a.append(loaded())
        b.append(twin())
    return statistics.median(a), statistics.median(b)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def idle_cpu(dynods: list[PrivateDynod], seconds: float) -> list[float]:
    """Each dynod's platform processes' CPU use (percent of one core) over the same idle window."""
    pids = [d.platform_pids() for d in dynods]
    before = [cpu_seconds(p) for p in pids]
    time.sleep(seconds)
    return [(cpu_seconds(p) - b) / seconds * 100 for p, b in zip(pids, before, strict=True)]


def restart(d: PrivateDynod, how: signal.Signals, apps: list[str], per_app: list[int]) -> tuple[float, float]:
    """End dynod, start a new one: (seconds until its API answers, until every dyno is up in ps)."""
    d.end(how)
    t0 = time.monotonic()
    api = d.start()
    with d.client() as client:
        wait(lambda: all_up(client, apps, per_app), timeout=300, interval=0.01)
    return api, time.monotonic() - t0


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def deploy(d: PrivateDynod, apps: list[str]) -> None:
    src = d.root / "src"
    src.mkdir(exist_ok=True)
    (src / "Procfile").write_text(PROCFILE)
    for app in apps:
        d.ctl("apps:create", app)
        d.ctl("deploy", "--no-build", str(src), "-a", app)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="0,100,500,1000", help="idle dyno counts, comma-separated, from 0")
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10, help="samples per latency figure")
    parser.add_argument("--kill9", action="store_true", help="also restart with kill -9 at each level")
    parser.add_argument("--idle-window", type=float, default=20.0,
                        help="seconds over which idle CPU is measured (the metrics interval is 20 s)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    levels = [int(x) for x in args.levels.split(",")]
    if levels[0] != 0:
        raise SystemExit("--levels must start at 0 (the baseline every figure is compared with)")
    stacks = Path(os.environ.get("DYNOD_TEST_STACKS", "/var/lib/dynod/stacks"))

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    # The peer: an identical private dynod that never runs more than the probe's one dyno. Its
    # figures are taken in turn with the loaded one's, so a busy host slows both alike and the
    # ratio is what the loaded dynod's own dynos cost it.
    d = PrivateDynod(stacks)
    twin: PrivateDynod | None = None
    curve: list[dict[str, float]] = []
    try:
        d.start()
        twin = PrivateDynod(stacks)  # after d's bridge is up: its subnet is then seen as taken
        twin.start()
        apps = [f"scale{i}" for i in range(args.apps)]
        deploy(d, [*apps, "probe"])
        deploy(twin, ["probe"])
        with d.client() as client, twin.client() as twin_client:
            for _ in range(2):  # warm-up: the slug unpacked, the stack looked up
                start_once(d, client, "probe")
                start_once(twin, twin_client, "probe")
        for n in levels:
            per_app = spread(n, args.apps)
            t0 = time.monotonic()
            with d.client() as client:
                for app, count in zip(apps, per_app, strict=True):
                    client.update_formation(app, [{"type": "idle", "quantity": count}])
                wait(lambda per_app=per_app: all_up(client, apps, per_app), timeout=900, interval=0.2)
            scale_s = time.monotonic() - t0
            time.sleep(3)  # let the starts' transient allocations settle
            kernel = meminfo_kib()
            rss = d.processes()
            charges = []
            with d.client() as client:
                memory_root = Path(client.request("GET", "/status")["cgroup_roots"][0])
            for group in memory_root.iterdir():
                if group.is_dir() and ".idle." in group.name:
                    with contextlib.suppress(OSError):
                        charges.append(int((group / "memory.usage_in_bytes").read_text()) / 1024)
            cpu, twin_cpu = idle_cpu([d, twin], args.idle_window)
            with d.client() as client, twin.client() as twin_client:
                start, twin_start = interleaved(args.runs, lambda: start_once(d, client, "probe"),
                                                lambda: start_once(twin, twin_client, "probe"))
                api_ps, twin_api_ps = interleaved(args.runs, lambda: api_list_once(client, "probe"),
                                                  lambda: api_list_once(twin_client, "probe"))
                api = statistics.median(api_list_once(client, apps[0]) for _ in range(args.runs))
            ps, twin_ps = interleaved(args.runs, lambda: ps_once(d, "probe"), lambda: ps_once(twin, "probe"))
            row = {"dynos": n, "scale_s": scale_s, "dynod_mib": rss["dynod"] / 1024,
                   "spawner_mib": rss["spawner"] / 1024, "router_mib": rss["router"] / 1024,
                   "kernel_kib": sum(kernel.get(f, 0) for f in KERNEL_FIELDS),
                   **{f"kernel_{f}_kib": float(kernel.get(f, 0)) for f in KERNEL_FIELDS},
                   "cgroup_charge_kib": statistics.median(charges) if charges else 0.0,
                   "idle_cpu_pct": cpu, "twin_idle_cpu_pct": twin_cpu,
                   "start_ms": start, "twin_start_ms": twin_start, "ps_ms": ps, "twin_ps_ms": twin_ps,
                   "api_ps_ms": api_ps, "twin_api_ps_ms": twin_api_ps, "api_list_ms": api,
                   "load": os.getloadavg()[0]}
            if n:
                row["restart_api_s"], row["restart_s"] = restart(d, signal.SIGTERM, apps, per_app)
                row["twin_restart_s"] = restart(twin, signal.SIGTERM, [], [])[1]  # the floor, same moment
                if args.kill9:
                    row["kill9_api_s"], row["kill9_s"] = restart(d, signal.SIGKILL, apps, per_app)
                row["dynod_after_restart_mib"] = d.processes()["dynod"] / 1024
            curve.append(row)
            print(f"level {n}: " + " ".join(f"{k}={v:.2f}" for k, v in row.items()), flush=True)
        with d.client() as client:  # stop them the moment the measurement is done
            for app in apps:
                client.update_formation(app, [{"type": "idle", "quantity": 0}])
    finally:
        try:
            d.close()
        finally:
            if twin is not None:
                twin.close()
    report(curve)
    return 0


def report(curve: list[dict[str, float]]) -> None:
    base, top = curve[0], curve[-1]
    loads = ", ".join(f"{r['load']:.1f}" for r in curve)
    print(f"\n{os.cpu_count()} CPUs, kernel {os.uname().release}; the host is shared: load average "
          f"{loads} at the levels; twin = the same dynod with no idle dynos, measured in turn")
    columns = ["dynos", "scale_s", "dynod_mib", "spawner_mib", "router_mib", "cgroup_charge_kib", "idle_cpu_pct",
               "twin_idle_cpu_pct", "start_ms", "twin_start_ms", "ps_ms", "twin_ps_ms", "api_ps_ms",
               "twin_api_ps_ms", "api_list_ms", "restart_api_s", "restart_s", "twin_restart_s", "kill9_s",
               "dynod_after_restart_mib", "load"]
    columns = [c for c in columns if any(c in r for r in curve)]
    for r in curve:
        print("  ".join(f"{c}={r[c]:.2f}" for c in columns if c in r))
    n = top["dynos"]
    if not n:
        return
    platform_kib = sum((top[k] - base[k]) * 1024 for k in ("dynod_mib", "spawner_mib", "router_mib")) / n
    kernel_kib = (top["kernel_kib"] - base["kernel_kib"]) / n
    start_ratio, ps_ratio = top["start_ms"] / top["twin_start_ms"], top["ps_ms"] / top["twin_ps_ms"]
    print(f"\nat {n:.0f} dynos                                         figure       aim")
    rows = [
        ("platform memory per dyno (dynod+spawner+router RSS)", f"{platform_kib:.0f} KiB", "<= 512 KiB",
         platform_kib <= 512),
        ("kernel-side per dyno (slab+percpu+stacks+page tables)", f"{kernel_kib:.0f} KiB", "(reported)", None),
        *((f"  of which {f}", f"{(top[f'kernel_{f}_kib'] - base[f'kernel_{f}_kib']) / n:.0f} KiB", "", None)
          for f in KERNEL_FIELDS),
        ("one dyno's cgroup charge (median)", f"{top['cgroup_charge_kib']:.0f} KiB", "(reported)", None),
        ("platform CPU at idle (twin's)", f"{top['idle_cpu_pct']:.1f}% ({top['twin_idle_cpu_pct']:.1f}%)",
         "(reported)", None),
        ("dynod RSS", f"{top['dynod_mib']:.1f} MiB", "<= 150 MiB", top["dynod_mib"] <= 150),
        ("dyno start, over the twin's in the same run", f"{top['start_ms']:.1f} / {top['twin_start_ms']:.1f} ms "
         f"= {start_ratio:.2f}x", "<= 1.5x", start_ratio <= 1.5),
        ("  over its own at 0 dynos", f"{top['start_ms'] / base['start_ms']:.2f}x", "", None),
        ("dynoctl ps, over the twin's in the same run", f"{top['ps_ms']:.1f} / {top['twin_ps_ms']:.1f} ms "
         f"= {ps_ratio:.2f}x", "<= 1.5x", ps_ratio <= 1.5),
        ("  over its own at 0 dynos", f"{top['ps_ms'] / base['ps_ms']:.2f}x", "", None),
        ("  the API's part (GET /apps/probe/dynos), twin's", f"{top['api_ps_ms']:.2f} ms ({top['twin_api_ps_ms']:.2f})",
         "", None),
        ("restart (SIGTERM) until every dyno is up", f"{top['restart_s']:.2f} s (twin {top['twin_restart_s']:.2f})",
         "< 5 s", top["restart_s"] < 5),
    ]
    if "kill9_s" in top:
        rows.append(("restart (kill -9) until every dyno is up", f"{top['kill9_s']:.2f} s", "< 5 s",
                     top["kill9_s"] < 5))
    for name, figure, aim, ok in rows:
        print(f"{name:<54} {figure:>28}  {aim:<10} {'' if ok is None else verdict(ok)}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # SIGINT or SIGTERM: main's finally has removed what it made
        print("bench_scale: interrupted; the private dynods and everything they made are removed", file=sys.stderr)
        sys.exit(130)
