"""Packing a build's tree into the slug store as a warm push does, this tree against another.

    sudo .venv/bin/python bench/builds/bench_pack.py TREE [--baseline DIR] [--rounds 10] [--packs 7]

TREE is a finished build's /app (an app with its venv: a slug's tree). Each round starts one
process per side (this checkout's dynod, and with ``--baseline`` the dynod package in DIR, a
``git archive`` of the code before a change), which stores TREE once into a private slug store
and then packs it ``--packs`` times more with the first slug's blocks reused, as a warm push
packs (a line of a copy of app.py changes between packs, as a new commit would). The sides take
turns. Printed: each side's median pack per round, the median of those, and the worst round.
Everything is written in a temporary directory under ``--dir`` (the system's temporary
directory unless told: name the disk whose speed is to be measured), and removed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ONE_SIDE = r"""
import json, shutil, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from dynod.builds.slug_store import SlugStore
tree, packs = Path(sys.argv[2]), int(sys.argv[3])
work = Path(tempfile.mkdtemp(prefix="dynod-bench-pack-", dir=sys.argv[4]))
try:
    src = work / "app"
    shutil.copytree(tree, src, symlinks=True)
    store = SlugStore(work / "slugs")
    first = store.store_directory(src)
    marker = src / "app.py" if (src / "app.py").is_file() else src / ".dynod-bench-pack"
    times = []
    for i in range(packs):
        with open(marker, "a") as f:
            f.write(f"\n# pack {i}\n")
        started = time.perf_counter()
        store.store_directory(src, reuse_from=first.id)
        times.append((time.perf_counter() - started) * 1000)
    print(json.dumps({"median_ms": statistics.median(times), "size": first.size}))
finally:
    shutil.rmtree(work, ignore_errors=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", type=Path, help="a finished build's /app (an app with its venv)")
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="a copy of the code before a change")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--packs", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the private slug stores go (the disk to measure)")
    args = parser.parse_args()
    if not args.tree.is_dir():
        raise SystemExit(f"No directory {args.tree}: name a finished build's /app (an app with its venv).")
    sides = {"this tree": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    results: dict[str, list[float]] = {name: [] for name in sides}
    size = 0
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            done = subprocess.run([sys.executable, "-c", ONE_SIDE, str(sides[name]), str(args.tree.resolve()),
                                   str(args.packs), str(args.dir)], capture_output=True, text=True)
            if done.returncode != 0:
                said = done.stderr.strip().splitlines()
                raise SystemExit(f"{name}: {said[-1] if said else f'exit {done.returncode}'}")
            result = json.loads(done.stdout)
            results[name].append(result["median_ms"])
            size = result["size"]
    print(f"packing {args.tree} ({size / 1e6:.1f} MB compressed), {args.rounds} rounds of {args.packs} packs, "
          "blocks reused")
    for name, medians in results.items():
        print(f"{name:10s} median of rounds {statistics.median(medians):7.1f} ms   worst round {max(medians):7.1f} ms"
              f"   rounds: {' '.join(f'{m:.0f}' for m in medians)}")
    if len(results) == 2:
        ratio = statistics.median(results["this tree"]) / statistics.median(results["baseline"])
        print(f"ratio this tree / baseline {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
