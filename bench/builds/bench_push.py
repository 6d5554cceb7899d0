"""git push to a running new release, cold and warm build cache, for the example apps.

    sudo .venv/bin/python bench/builds/bench_push.py [--runs 3] [--trace] [--app python-flask ...] [--pause 5]

Without --app it measures examples/python-flask (issue 16's figure); `--app all` measures the
five apps of issue 11: pip (python-flask), Poetry (python-poetry), uv (python-uv), npm
(node-express) and pnpm (node-pnpm). Each app gets its own private dynod per run.

Uses a private dynod (as bench/start/bench_start.py does). For each push it reports the whole time
from `git push` to the new release's web dyno answering, the buildpack's own compile time (from
the build output) and so the build overhead around it. The overhead is split into phases by the
moment each line of the build's output reached the pusher:

    upload+detect  push start -> "<Name> app detected" (git, source upload and unpack, container)
    compile        the buildpack's own "app compiled (N s)" figure
    around compile detect line + compile -> "Compressing..." (containers, release, Procfile)
    compress       "Compressing..." -> "Launching..." (pack into the store, the build tree moved in)
    release        "Launching..." -> git push returns (the ledger, the push's end)
    dyno up        git push returns -> the new release's web dyno is up

--trace prints every line of each warm push's output with the second it reached the pusher, then
when git push returned and when the web dyno was up: where inside a phase the time goes.

The warm push comes --pause seconds (default 5) after the cold one's web dyno is up, as a next
push comes after a while: dynod prepares the next build's copy of the cached venv between builds
(dynod/builds/restore.py). `--pause 0` pushes back to back, as this bench did before, and the
warm build then waits for that copy.

``--baseline DIR`` runs the dynod package found in DIR (``git archive`` of the tree before a
change, bytecode compiled) on every other private dynod, this tree's and its runs alternating
(which goes first swapping each run), and prints both and this tree's ratio to it.

Medians over --runs runs (each one a fresh dynod: one cold and one warm push), then the slug's
size and the time to unpack it once from the tarball (what a dyno start pays when the tree the
build left is not there, e.g. for an uploaded slug).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "start"))
from bench_start import REPO, PrivateDynod, wait  # noqa: E402

from dynod.builds.slug_store import SlugStore  # noqa: E402

ISSUE_11_APPS = ("python-flask", "python-poetry", "python-uv", "node-express", "node-pnpm")
PHASES = ("total", "compile", "overhead", "upload+detect", "around compile", "compress", "release", "dyno up")


def push(d: PrivateDynod, work: Path, app: str, version: int, trace: bool = False) -> dict[str, float]:
    client = d.client()
    start = time.perf_counter()
    proc = subprocess.Popen(["git", "-C", str(work), "push", "--progress", str(d.root / "state" / "repos" /
                             f"{app}.git"), "HEAD:main", "--force"], stderr=subprocess.PIPE, text=True,
                            env=d.env)
    assert proc.stderr is not None
    seen: dict[str, float] = {}
    text = []
    for line in proc.stderr:
        now = time.perf_counter() - start
        text.append(line)
        if trace:  # where the time goes, line by line, as the pusher sees it
            print(f"{now:7.3f} {line.rstrip()}", file=sys.stderr)
        for key, pattern in (("detected", r"app detected"), ("compressing", r"Compressing\.\.\."),
                             ("launching", r"Launching\.\.\.")):
            if re.search(pattern, line):
                seen.setdefault(key, now)
        if (match := re.search(r"app compiled \(([\d.]+) s\)", line)):
            seen["compile"] = float(match.group(1))
    if proc.wait() != 0:
        raise SystemExit("".join(text))
    pushed = time.perf_counter() - start
    wait(lambda: any(x["type"] == "web" and x["state"] == "up" and x["release"]["version"] == version
                     for x in client.list_dynos(app)), timeout=300)
    total = time.perf_counter() - start
    if trace:
        print(f"{pushed:7.3f} (git push returned)\n{total:7.3f} (web dyno up)", file=sys.stderr)
    return {"total": total, "compile": seen["compile"], "overhead": total - seen["compile"],
            "upload+detect": seen["detected"],
            "around compile": seen["compressing"] - seen["detected"] - seen["compile"],
            "compress": seen["launching"] - seen["compressing"], "release": pushed - seen["launching"],
            "dyno up": total - pushed}


def one_run(keep_log: Path | None, trace: bool = False, example: str = "python-flask", pause: float = 5.0,
            code: Path | None = None) -> tuple[dict[str, float], dict[str, float], int, float]:
    d = PrivateDynod(Path("/var/lib/dynod/stacks"), code=code)
    try:
        app = "bench-" + example.replace("_", "-")[:20]
        d.ctl("apps:create", app)
        work = d.root / "src"
        shutil.copytree(REPO / "examples" / example, work)
        git = ["git", "-c", "user.email=b@example.test", "-c", "user.name=b", "-C", str(work)]
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "bench"], check=True)
        cold = push(d, work, app, 2)
        time.sleep(pause)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "again"], check=True)
        warm = push(d, work, app, 3, trace)
        release = d.client().get_release(app, None)
        info = SlugStore(d.root / "state" / "slugs").get(release["slug"]["id"])
        probe = SlugStore(d.root / "unpack-bench")
        copied = probe.store_file(info.path)
        start = time.perf_counter()
        probe.unpacked(copied.id, 61000, 61000)
        unpack = time.perf_counter() - start
    finally:
        if keep_log is not None:
            shutil.copy(d.root / "dynod.log", keep_log)
        d.close()
    return cold, warm, info.size, unpack


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-log", type=Path, help="copy the last run's dynod.log here")
    parser.add_argument("--trace", action="store_true",
                        help="print each warm push's output lines to stderr with their arrival time")
    parser.add_argument("--app", action="append", metavar="EXAMPLE",
                        help="an app of examples/ (repeatable), or 'all' for issue 11's five; default python-flask")
    parser.add_argument("--pause", type=float, default=5.0, metavar="SECONDS",
                        help="between the cold push's web dyno up and the warm push (default 5; 0: back to back)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="another copy of dynod (the tree before a change): its pushes alternate with this "
                             "tree's, each on a private dynod, and the ratios are printed")
    args = parser.parse_args()
    apps: list[str] = []
    for name in args.app or ["python-flask"]:
        apps.extend(ISSUE_11_APPS if name == "all" else [name])
    for name in apps:
        if not (REPO / "examples" / name).is_dir():
            raise SystemExit(f"No app examples/{name}; pick one of: {', '.join(ISSUE_11_APPS)} (or another directory "
                             "of examples/).")
    print(f"git push -> new release's web dyno up; medians of {args.runs} runs (s), warm push {args.pause:g} s "
          "after the cold one")
    print(f"{'':26s}" + "".join(f"{name:>15s}" for name in PHASES))
    for example in apps:
        if args.baseline is None:
            runs = [one_run(args.keep_log, args.trace, example, args.pause) for _ in range(args.runs)]
            report(example, runs)
            continue
        # This tree and the baseline take turns, which goes first swapping each run.
        ours: list[Run] = []
        theirs: list[Run] = []
        for n in range(args.runs):
            for code in ((None, args.baseline) if n % 2 == 0 else (args.baseline, None)):
                (ours if code is None else theirs).append(one_run(args.keep_log, args.trace, example, args.pause, code))
        report(example, ours, "this tree")
        report(example, theirs, f"baseline {args.baseline}")
        for label, index in (("cold", 0), ("warm", 1)):
            ratios = "  ".join(f"{name} {median_of(ours, index, name) / median_of(theirs, index, name):.2f}"
                               for name in ("total", "overhead"))
            print(f"{example + ' ' + label:26s}this tree / baseline: {ratios}")
    return 0


Run = tuple[dict[str, float], dict[str, float], int, float]


def median_of(runs: list[Run], index: int, phase: str) -> float:
    return statistics.median(run[index][phase] for run in runs)  # type: ignore[literal-required]


def report(example: str, runs: list[Run], heading: str = "") -> None:
    if heading:
        print(f"{heading}:")
    for label, index in (("cold", 0), ("warm", 1)):
        medians = [statistics.median(run[index][name] for run in runs) for name in PHASES]  # type: ignore[index]
        print(f"{example + ' ' + label:26s}" + "".join(f"{value:15.2f}" for value in medians))
    print(f"{'':26s}slug: {runs[0][2] / 1e6:.1f} MB compressed; unpacking it from the tarball: "
          f"{statistics.median(run[3] for run in runs) * 1000:.0f} ms", flush=True)


if __name__ == "__main__":
    sys.exit(main())
