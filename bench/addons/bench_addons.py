"""Add-ons: provisioning time per service and plan, and a database's speed from a dyno.

    sudo .venv/bin/python bench/addons/bench_addons.py [--runs 3] [--seconds 10] [--clients 2]

Uses a private dynod (as bench/start/bench_start.py does), with the router off.

1. Provisioning: `addons:create` of every built-in plan, --runs times each (destroyed in
   between, without a final backup): the API call's wall time, median and max.
2. A database's speed: the same read-only pgbench-like load (pg_client.py, pgbench -S's query)
   against one heroku-postgresql add-on, (a) from a one-off dyno of an app it is attached to,
   through the dyno network (veth, bridge, nftables' admitted-only port, TCP, scram), and (b) on
   the host over the cluster's own unix socket; the ratio (a)/(b). Debian's pgbench over the
   socket is printed too, as the reference a C client reaches.
Benchmark on a quiet host only: every figure halves when the host is busy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "start"))
from bench_start import BIN, PrivateDynod  # noqa: E402

STACKS = Path(os.environ.get("DYNOD_TEST_STACKS", "/var/lib/dynod/stacks"))


def provisioning(d: PrivateDynod, app: str, runs: int) -> list[tuple[str, float, float]]:
    from dynod.addons.plans import BUILT_IN

    client = d.client()
    rows = []
    for service in BUILT_IN.values():
        for plan in service.plans:
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                addon = client.create_addon(app, plan.id)
                times.append(time.perf_counter() - start)
                client.destroy_addon(app, addon["name"], final_backup=False)
            rows.append((plan.id, statistics.median(times), max(times)))
    return rows


def admin(d: PrivateDynod, name: str) -> tuple[dict[str, str], dict]:  # type: ignore[type-arg]
    db = sqlite3.connect(d.root / "state" / "dynod.sqlite3")
    data = json.loads(db.execute("SELECT provider_data FROM addons WHERE name = ?", (name,)).fetchone()[0])
    db.close()
    env = {**os.environ, "PGHOST": str(d.root / "state" / "addons" / name / "run"), "PGPORT": str(data["port"]),
           "PGUSER": "postgres", "PGPASSWORD": data["superuser_password"], "PGDATABASE": data["database"]}
    return env, data


def speed(d: PrivateDynod, app: str, seconds: float, clients: int) -> dict[str, dict]:  # type: ignore[type-arg]
    from dynod.addons.postgresql import BIN as PG_BIN

    client = d.client()
    addon = client.create_addon(app, "heroku-postgresql:standard-0")
    env, data = admin(d, addon["name"])
    # pgbench's tables, owned by the add-on's role (so the app's dynos may read them).
    subprocess.run([str(PG_BIN / "pgbench"), "-i", "-s", "10", "-q"],
                   env={**env, "PGOPTIONS": f"-c role={data['user']}"}, check=True, capture_output=True)
    src = Path(tempfile.mkdtemp(prefix="bench-addons-app-"))
    try:
        (src / "Procfile").write_text("web: python -m http.server $PORT\n")
        (src / "requirements.txt").write_text("psycopg[binary]>=3.1\n")
        shutil.copy(HERE / "pg_client.py", src / "pg_client.py")
        subprocess.run([str(BIN / "dynoctl"), "deploy", str(src), "-a", app], env=d.env, check=True,
                       capture_output=True, timeout=900)
    finally:
        shutil.rmtree(src, ignore_errors=True)
    line = f'python pg_client.py "$DATABASE_URL" {seconds} {clients}'  # one word: the dyno's shell expands it
    out = subprocess.run([str(BIN / "dynoctl"), "run", "-a", app, "--no-tty", "--", line], env=d.env, check=True,
                         capture_output=True, text=True, timeout=seconds + 120).stdout
    dyno = json.loads(out.strip().splitlines()[-1])
    socket_url = (f"postgresql://postgres:{data['superuser_password']}@/{data['database']}"
                  f"?host={env['PGHOST']}&port={data['port']}")
    local = json.loads(subprocess.run([sys.executable, str(HERE / "pg_client.py"), socket_url, str(seconds),
                                       str(clients)], check=True, capture_output=True, text=True).stdout)
    pgbench = subprocess.run([str(PG_BIN / "pgbench"), "-S", "-n", "-T", str(int(seconds)), "-c", str(clients)],
                             env=env, check=True, capture_output=True, text=True).stdout
    tps = next(float(line.split("=")[1].split()[0]) for line in pgbench.splitlines() if line.startswith("tps"))
    return {"dyno (TCP, dyno network)": dyno, "host (unix socket)": local, "pgbench -S (unix socket)": {"tps": tps}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: dynod makes cgroups, bridges and namespaces")
    d = PrivateDynod(STACKS)
    try:
        app = "bench-addons"
        d.ctl("apps:create", app)
        print(f"{'plan':<34} {'median':>8} {'max':>8}   (addons:create, {args.runs} runs each)")
        for plan, median, worst in provisioning(d, app, args.runs):
            print(f"{plan:<34} {median:>7.2f}s {worst:>7.2f}s")
        results = speed(d, app, args.seconds, args.clients)
        print(f"\nread-only load, {args.clients} clients, {args.seconds:.0f} s each (pgbench -S's query, scale 10)")
        for where, r in results.items():
            extra = f"  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms" if "p50_ms" in r else ""
            print(f"{where:<28} {r['tps']:>9.0f} tps{extra}")
        ratio = results["dyno (TCP, dyno network)"]["tps"] / results["host (unix socket)"]["tps"]
        print(f"ratio dyno / local socket (same client): {ratio:.2f}")
    finally:
        d.close()


if __name__ == "__main__":
    main()
