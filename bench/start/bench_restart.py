"""A lone web dyno restarted: how long after the app binds $PORT dynod calls it `up`.

    sudo .venv/bin/python bench/start/bench_restart.py [--runs 40] [--baseline DIR]

Starts a private dynod (bench_start's), pushes examples/python-flask (gunicorn) and restarts its
one web dyno ``--runs`` times (`dynoctl ps:restart web`, the next once it is up). Read from
`dynoctl logs`, per restart: the gap between gunicorn's `Listening at` line and dynod's
`State changed from starting to up` (the boot probe's lag: its schedule, and any packet to the
dyno the kernel dropped), and `Starting process` to `up` (the whole boot). A lone dyno is the case
where the bridge loses its carrier between the old dyno and the new (docs/manager.md).

``--baseline DIR`` runs a second private dynod on the dynod package in DIR (a copy of the tree
before a change, as bench_start's) and alternates the rounds between the two.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "builds"))

from bench_push import push  # noqa: E402
from bench_start import BIN, REPO, PrivateDynod  # noqa: E402

APP = "restart-bench"
LATE = 0.5  # s past the bind: a dropped SYN (TCP's 1 s retransmit), not the probe's schedule


def logs(d: PrivateDynod) -> list[str]:
    return subprocess.run([str(BIN / "dynoctl"), "logs", "-n", "1500", "-a", APP], env=d.env,
                          capture_output=True, text=True, check=True).stdout.splitlines()


def deploy(d: PrivateDynod) -> None:
    d.ctl("apps:create", APP)
    work = d.root / "src"
    shutil.copytree(REPO / "examples" / "python-flask", work)
    git = ["git", "-c", "user.email=bench@example.test", "-c", "user.name=bench", "-C", str(work)]
    for step in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "bench"]):
        subprocess.run([*git, *step], check=True)
    push(d, work, APP, 2)


def restart(d: PrivateDynod) -> None:
    ups = sum("starting to up" in line for line in logs(d))
    d.ctl("ps:restart", "web", "-a", APP)
    deadline = time.monotonic() + 30
    while sum("starting to up" in line for line in logs(d)) <= ups:
        if time.monotonic() > deadline:
            raise SystemExit("the restarted web dyno did not come up within 30 s")
        time.sleep(0.1)


def gaps(lines: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(bind -> up, start -> up) in ms for the last ``runs`` boots."""
    def at(marker: str) -> list[float]:
        return [datetime.fromisoformat(line.split()[0]).timestamp() for line in lines if marker in line]

    listen, start, up = at("Listening at"), at("Starting process"), at("starting to up")
    return ([(u - b) * 1000 for b, u in zip(listen[-runs:], up[-runs:], strict=True)],
            [(u - s) * 1000 for s, u in zip(start[-runs:], up[-runs:], strict=True)])


def report(label: str, lag: list[float], boot: list[float]) -> None:
    late = [g for g in lag if g >= LATE * 1000]
    rest = [g for g in lag if g < LATE * 1000]
    print(f"{label:<10} bind -> up: {len(late)} of {len(lag)} later than {LATE:g} s"
          f"{' (' + ', '.join(f'{g:.0f}' for g in late) + ' ms)' if late else ''}; the rest mean "
          f"{statistics.mean(rest):.1f} ms, max {max(rest):.0f} ms | start -> up median "
          f"{statistics.median(boot):.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--baseline", type=Path, help="a copy of the tree before a change")
    args = parser.parse_args()
    stacks = Path("/var/lib/dynod/stacks")
    dynods = {"this tree": PrivateDynod(stacks)}
    try:
        if args.baseline is not None:
            dynods["baseline"] = PrivateDynod(stacks, code=args.baseline)
        for d in dynods.values():
            deploy(d)
        time.sleep(2)
        for _ in range(args.runs):
            for d in dynods.values():
                restart(d)
                time.sleep(0.5)  # the old dyno gone, as between two restarts by hand
        for label, d in dynods.items():
            report(label, *gaps(logs(d), args.runs))
    finally:
        for d in dynods.values():
            d.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
