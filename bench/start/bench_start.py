"""Dyno start and one-off round trip, side by side with runc and bubblewrap, in one run.

    sudo .venv/bin/python bench/start/bench_start.py [--runs 30] [--idle 100] [--warm N]
    sudo .venv/bin/python bench/start/bench_start.py --warm-pair [--runs 30]

Starts a private dynod (its own state dir, cgroup subtree, bridge and subnet; no router), then:
1. dyno start latency: the time from the scale request (PATCH formation, worker 0 -> 1) to the
   app process running, read from the app's own clock: the first word its bash expands is
   `$EPOCHREALTIME` (bash 5: gettimeofday, CLOCK_REALTIME as the bench's `time.time_ns()`, no
   fork), then `$(date +%s%N)` (the probe of earlier rounds: a fork and exec of date, ~2-3 ms
   here, the instrument's own cost), both printed on one line and both reported;
2. `dynoctl run -- true` round trip (client start, API, dyno, exit code back), interleaved with
   `runc run` and `bwrap --unshare-all` of /bin/true on the same stack rootfs, and with the client's
   start-up alone: `dynoctl --version` (the same launcher and imports up to the first request) and
   the interpreter's own floor (`python -S -P -c pass`, how the launcher starts Python);
3. memory with N idle dynos: dynod's and the spawner's RSS, and per dyno the memory outside the
   app (tini's PSS) and the whole dyno cgroup's charge.
Medians are reported; ratios are dynod's time over the peer's. Everything it made is removed.

``--baseline DIR`` with ``--warm-pair`` compares code instead: the second dynod runs the dynod
package found in DIR (a copy of the tree before a change, made with ``cp -a`` so that its cached
bytecode stays valid where PYTHONDONTWRITEBYTECODE is set) with the same ``--warm`` as the first.

``--warm-pair`` instead measures the warm pool against its own absence: two private dynods, one
with ``warm_pool = 2`` and one with 0, dyno starts alternating between them (which goes first
swaps each round; a `dynoctl run -- true` after each start, alternating the same way), and the
memory a warm dyno holds while it waits (its cgroup's charge, the PSS
of its processes).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
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
from dynod.stack import StackStore  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def private_kib(pid: int) -> int:
    """Memory only this process maps (what killing it gives back): its private pages."""
    return sum(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup")
               if line.startswith(("Private_Clean:", "Private_Dirty:")))


def free_thirds(count: int) -> list[int]:
    """``count`` distinct N of 198.19.N.0/24 that no route on the host has: a dynod's dyno and
    build subnets must be its own (dynod refuses one another link has)."""
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True,
                            text=True).stdout
    taken = {int(word.split(".")[2]) for word in routes.split() if word.startswith("198.19.")}
    return secrets.SystemRandom().sample([n for n in range(1, 251) if n not in taken], count)


class PrivateDynod:
    def __init__(self, stacks: Path, warm_pool: int = 0, code: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dynod-bench-"))
        token = secrets.token_hex(2)
        dynos_third, builds_third = free_thirds(2)
        self.socket = self.root / "run" / "api.sock"
        self.config = self.root / "dynod.toml"
        self.config.write_text(f"""
state_dir = "{self.root / 'state'}"
run_dir = "{self.root / 'run'}"
stacks_path = "{stacks}"
[dynos]
stop_timeout = 2.0
tmpfs_size_mb = 16
warm_pool = {warm_pool}
[network]
subnet = "198.19.{dynos_third}.0/24"
bridge = "dyb{token}"
build_subnet = "198.19.{builds_third}.0/24"
[cgroups]
name = "dynod-bench-{token}"
[router]
enabled = false
[logs]
metrics_interval = 0
""")
        self.env = {**os.environ, "DYNOD_SOCKET": str(self.socket)}  # for its clients
        self.code = code
        daemon_env = dict(self.env)
        if code is not None:
            # Another copy of dynod (the code before a change) first on the daemon's path, and so
            # on its spawner's and router's; never on the clients' (an A/A run showed dynoctl
            # itself slower when importing from such a copy).
            daemon_env.update(PYTHONPATH=str(code), DYNOD_ROOTFS_DIR=str(REPO / "rootfs"))
        self.log = open(self.root / "dynod.log", "ab")
        # cwd: its own dir, not the checkout: the spawner starts as `python -m dynod.linux.spawner`,
        # whose sys.path begins with the cwd, so from the checkout a baseline's spawner (and the
        # dynos it forks) would run this tree's code.
        self.proc = subprocess.Popen([str(BIN / "dynod"), "--config", str(self.config)], stdout=self.log,
                                     stderr=self.log, env=daemon_env, cwd=self.root)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket))
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"dynod did not start; see {self.root / 'dynod.log'}")

    def client(self) -> ApiClient:
        return ApiClient(self.socket)

    def ctl(self, *args: str) -> None:
        subprocess.run([str(BIN / "dynoctl"), *args], env=self.env, check=True, capture_output=True)

    def close(self) -> None:
        try:
            self.client().request("POST", "/shutdown", {"stop_dynos": True})
            self.proc.wait(timeout=120)
        finally:
            self.log.close()
            keep = os.environ.get("DYNOD_BENCH_KEEP_LOGS")  # a dir: dynod's log is copied there first
            if keep:
                label = "baseline" if self.code is not None else "tree"
                shutil.copy(self.root / "dynod.log", Path(keep) / f"{self.root.name}-{label}.log")
            shutil.rmtree(self.root, ignore_errors=True)


def wait(predicate, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    raise SystemExit("timed out")


# The app's clock, read first by bash itself ($EPOCHREALTIME, microseconds, no fork; the locale
# may write its decimal point as a comma), then by a forked date (nanoseconds).
CLOCK = "clock: echo T0=${EPOCHREALTIME/[.,]/} D=$(date +%s%N); exec sleep infinity\n"


def dyno_start_latency(d: PrivateDynod, app: str, runs: int) -> tuple[list[float], list[float]]:
    """Start latencies (ms) by bash's $EPOCHREALTIME, and of the same starts by `date`."""
    client = d.client()
    samples, by_date = [], []
    for _ in range(runs):
        t0 = time.time_ns()
        client.update_formation(app, [{"type": "clock", "quantity": 1}])

        def first_line(t0: int = t0) -> str | None:
            for x in client.log_lines(app, 1500, "clock", "app"):
                if "T0=" in x and " D=" in x and int(x.split("T0=")[1].split()[0]) * 1000 > t0:
                    return x
            return None

        # The app's clock has the answer already; polling the log API every 2 ms meanwhile took
        # the CPU (and dynod's loop) from the very start being timed, on a 2-core host.
        time.sleep(0.05)
        line = wait(first_line)
        bash_us, date_ns = line.split("T0=")[1].split(" D=")
        samples.append((int(bash_us) * 1000 - t0) / 1e6)
        by_date.append((int(date_ns) - t0) / 1e6)
        client.update_formation(app, [{"type": "clock", "quantity": 0}])
        wait(lambda: not [x for x in client.list_dynos(app) if x["type"] == "clock"])
    return samples, by_date


def time_command(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def make_runc_bundle(stack: Path) -> Path:
    bundle = Path(tempfile.mkdtemp(prefix="dynod-bench-runc-"))
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(stack), "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def idle_memory(d: PrivateDynod, app: str, count: int) -> dict[str, float]:
    client = d.client()
    client.update_formation(app, [{"type": "idle", "quantity": count}])
    wait(lambda: len([x for x in client.list_dynos(app) if x["type"] == "idle" and x["state"] == "up"]) == count,
         timeout=600)
    time.sleep(2)
    status = client.request("GET", "/status")
    memory_root = Path(status["cgroup_roots"][0])
    tini_pss, charges = [], []
    for group in memory_root.iterdir():
        if not group.is_dir() or ".idle." not in group.name:
            continue
        pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        inits = [p for p in pids if open(f"/proc/{p}/comm").read().strip() == "tini"]
        tini_pss += [pss_kib(p) for p in inits]
        charges.append(int((group / "memory.usage_in_bytes").read_text()) / 1024)
    spawner = int(subprocess.run(["pgrep", "-f", f"spawner --socket {d.root}"], capture_output=True,
                                 text=True).stdout.split()[0])
    result = {
        "dynos": len(charges),
        "dynod_rss_mib": rss_kib(d.proc.pid) / 1024,
        "spawner_rss_mib": rss_kib(spawner) / 1024,
        "per_dyno_init_pss_kib": statistics.median(tini_pss),
        "per_dyno_cgroup_kib": statistics.median(charges),
    }
    client.update_formation(app, [{"type": "idle", "quantity": 0}])
    wait(lambda: not [x for x in client.list_dynos(app) if x["type"] == "idle"], timeout=300)
    return result


def warm_memory(d: PrivateDynod) -> dict[str, float]:
    """What each warm dyno of ``d`` holds while it waits: its group's charge and its processes' PSS."""
    memory_root = Path(d.client().request("GET", "/status")["cgroup_roots"][0])
    charges, pss, private = [], [], []
    for group in memory_root.iterdir():
        if group.is_dir() and group.name.startswith("warm."):
            # v1 charges a page to the group it was touched in: a warm dyno's forked pages stay the
            # spawner's, so its own group shows little; PSS and private pages say what it holds.
            charges.append(int((group / "memory.usage_in_bytes").read_text()) / 1024)
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            pss.append(sum(pss_kib(p) for p in pids))
            private.append(sum(private_kib(p) for p in pids))
    if not charges:
        return {}
    return {"warm dynos": len(charges), "per_warm_dyno_cgroup_kib": statistics.median(charges),
            "per_warm_dyno_pss_kib": statistics.median(pss), "per_warm_dyno_private_kib": statistics.median(private)}


def warm_pair(stacks: Path, runs: int, baseline: Path | None, warm: int) -> int:
    """Dyno starts with the pool (warm_pool = 2) and without, or this tree's code against a
    baseline copy's, interleaved in one run."""
    first, second = ("this tree", "baseline") if baseline is not None else ("warm_pool=2", "warm_pool=0")
    dynods = {first: PrivateDynod(stacks, warm_pool=warm if baseline is not None else 2)}
    try:
        dynods[second] = (PrivateDynod(stacks, warm_pool=warm, code=baseline) if baseline is not None
                          else PrivateDynod(stacks, warm_pool=0))
        for d in dynods.values():
            d.ctl("apps:create", "bench")
            src = d.root / "src"
            src.mkdir()
            (src / "Procfile").write_text(CLOCK)
            d.ctl("deploy", "--no-build", str(src), "-a", "bench")
        pool = warm if baseline is not None else 2
        for name, d in dynods.items():
            if pool and name != "warm_pool=0":
                wait(lambda d=d: warm_memory(d).get("warm dynos") == pool)
        memory = warm_memory(dynods[first]) if pool else {}
        samples: dict[str, list[float]] = {name: [] for name in dynods}
        by_date: dict[str, list[float]] = {name: [] for name in dynods}
        run_true: dict[str, list[float]] = {name: [] for name in dynods}
        names = list(dynods)
        for i in range(runs + 2):
            for name in names if i % 2 == 0 else names[::-1]:
                d = dynods[name]
                start, dated = dyno_start_latency(d, "bench", 1)
                took = time_command([str(BIN / "dynoctl"), "run", "-a", "bench", "--no-tty", "--", "true"], d.env)
                if i >= 2:  # the first two rounds warm up (stack, slug, page cache)
                    samples[name] += start
                    by_date[name] += dated
                    run_true[name].append(took)
    finally:
        for d in dynods.values():
            d.close()
    print(f"{os.cpu_count()} CPUs, kernel {os.uname().release}, load average {os.getloadavg()[0]:.2f}, "
          f"{runs} starts each, alternating")
    med = {}
    for name, values in samples.items():
        med[name] = statistics.median(values)
        p90 = sorted(values)[int(len(values) * 0.9) - 1]
        print(f"dyno start, {name:<12} median {med[name]:7.2f} ms  p90 {p90:7.2f}  min {min(values):7.2f}")
    print(f"ratio {first} / {second} {med[first] / med[second]:8.2f}")
    for name, values in by_date.items():
        p90 = sorted(values)[int(len(values) * 0.9) - 1]
        print(f"dyno start by date(1), {name:<12} median {statistics.median(values):7.2f} ms  p90 {p90:7.2f}")
    for name, values in run_true.items():
        p90 = sorted(values)[int(len(values) * 0.9) - 1]
        print(f"dynoctl run -- true, {name:<12} median {statistics.median(values):7.2f} ms  p90 {p90:7.2f}")
    for key, value in memory.items():
        print(f"{key:<50} {value:8.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--idle", type=int, default=100)
    parser.add_argument("--warm", type=int, default=0, help="[dynos] warm_pool for the private dynod")
    parser.add_argument("--warm-pair", action="store_true",
                        help="dyno starts with warm_pool = 2 against warm_pool = 0, interleaved")
    parser.add_argument("--baseline", type=Path,
                        help="with --warm-pair: a dir holding an older dynod package to compare this tree with")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    stacks = Path(os.environ.get("DYNOD_TEST_STACKS", "/var/lib/dynod/stacks"))
    if args.warm_pair:
        return warm_pair(stacks, args.runs, args.baseline, args.warm)
    stack = StackStore(stacks).path("debian-13")
    d = PrivateDynod(stacks, warm_pool=args.warm)
    bundle = make_runc_bundle(stack)
    try:
        app = "bench"
        d.ctl("apps:create", app)
        src = d.root / "src"
        src.mkdir()
        (src / "Procfile").write_text(CLOCK + "idle: exec sleep infinity\n")
        d.ctl("deploy", "--no-build", str(src), "-a", app)
        starts, by_date = dyno_start_latency(d, app, args.runs)
        run_true = [str(BIN / "dynoctl"), "run", "-a", app, "--no-tty", "--", "true"]
        runc = ["runc", "run", "--bundle", str(bundle), f"dynod-bench-{os.getpid()}"]
        bwrap = ["bwrap", "--unshare-all", "--ro-bind", str(stack), "/", "--proc", "/proc", "--dev", "/dev",
                 "--die-with-parent", "/bin/true"]
        commands = {
            "dynoctl run -- true": (run_true, d.env),
            "dynoctl --version (client start-up)": ([str(BIN / "dynoctl"), "--version"], d.env),
            "python -S -P -c pass (interpreter)": ([sys.executable, "-S", "-P", "-c", "pass"], None),
            "runc run": (runc, None),
            "bwrap --unshare-all": (bwrap, None),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(3):  # warm-up
            for argv, env in commands.values():
                time_command(argv, env)
        for _ in range(args.runs):  # interleaved, so drift hits all of them alike
            for name, (argv, env) in commands.items():
                times[name].append(time_command(argv, env))
        memory = idle_memory(d, app, args.idle) if args.idle else {}
    finally:
        d.close()
        shutil.rmtree(bundle, ignore_errors=True)
    med = {name: statistics.median(values) for name, values in times.items()}
    start_median = statistics.median(starts)
    print(f"{os.cpu_count()} CPUs, kernel {os.uname().release}, load average {os.getloadavg()[0]:.2f}, "
          f"{args.runs} runs each (medians), warm_pool={args.warm}")
    print(f"dyno start (scale request -> app process running)  {start_median:8.2f} ms "
          f"(p90 {sorted(starts)[int(len(starts) * 0.9) - 1]:.2f})")
    print(f"{'  the same starts by date(1) (its fork + exec)':<50} {statistics.median(by_date):8.2f} ms "
          f"(p90 {sorted(by_date)[int(len(by_date) * 0.9) - 1]:.2f})")
    for name, value in med.items():
        print(f"{name:<50} {value:8.2f} ms (p90 {sorted(times[name])[int(len(times[name]) * 0.9) - 1]:.2f})")
    server = med["dynoctl run -- true"] - med["dynoctl --version (client start-up)"]
    print(f"{'run -- true beyond the client start-up':<50} {server:8.2f} ms (API, dyno, exit, teardown)")
    print(f"ratio dyno start / runc run                         {start_median / med['runc run']:8.2f}")
    print(f"ratio dyno start / bwrap                            {start_median / med['bwrap --unshare-all']:8.2f}")
    print(f"ratio dynoctl run -- true / runc run                "
          f"{med['dynoctl run -- true'] / med['runc run']:8.2f}")
    print(f"ratio dynoctl run -- true / bwrap                   "
          f"{med['dynoctl run -- true'] / med['bwrap --unshare-all']:8.2f}")
    for key, value in memory.items():
        print(f"{key:<50} {value:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
