"""git push to a running new release, cold and warm build cache, for examples/python-flask.

    sudo .venv/bin/python bench/builds/bench_push.py

Uses a private dynod (as bench/start/bench_start.py does). For each push it reports the whole time
from `git push` to the new release's web dyno answering, the buildpack's own compile time (from
the build output) and so the build overhead around it, then the slug's size and the time to
unpack it once (what the first dyno of a release pays).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "start"))
from bench_start import REPO, PrivateDynod, wait  # noqa: E402

from dynod.build.slug import SlugStore  # noqa: E402


def push(d: PrivateDynod, work: Path, app: str, version: int) -> tuple[float, float, str]:
    client = d.client()
    start = time.perf_counter()
    result = subprocess.run(["git", "-C", str(work), "push", "-q", str(d.root / "state" / "repos" / f"{app}.git"),
                             "HEAD:main", "--force"], capture_output=True, text=True, env=d.env)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    wait(lambda: any(x["type"] == "web" and x["state"] == "up" and x["release"]["version"] == version
                     for x in client.list_dynos(app)), timeout=300)
    total = time.perf_counter() - start
    compiled = re.search(r"Python app compiled \(([\d.]+) s\)", result.stderr) or re.search(
        r"app compiled \(([\d.]+) s\)", result.stderr)
    return total, float(compiled.group(1)) if compiled else float("nan"), result.stderr


def main() -> int:
    stacks = Path("/var/lib/dynod/stacks")
    d = PrivateDynod(stacks)
    try:
        app = "flask"
        d.ctl("apps:create", app)
        work = d.root / "src"
        shutil.copytree(REPO / "examples" / "python-flask", work)
        git = ["git", "-c", "user.email=b@example.test", "-c", "user.name=b", "-C", str(work)]
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "bench"], check=True)
        cold, cold_compile, _ = push(d, work, app, 2)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "again"], check=True)
        warm, warm_compile, _ = push(d, work, app, 3)
        release = d.client().get_release(app, None)
        store = SlugStore(d.root / "state" / "slugs")
        info = store.get(release["slug"]["id"])
        unpack_dir = d.root / "unpack-bench"
        probe = SlugStore(unpack_dir)
        copied = probe.store_file(info.path)
        start = time.perf_counter()
        probe.unpacked(copied.id, 61000, 61000)
        unpack = time.perf_counter() - start
    finally:
        d.close()
    print("examples/python-flask, git push -> new release's web dyno up")
    print(f"cold cache: {cold:6.2f} s total, buildpack compile {cold_compile:5.2f} s, "
          f"everything else {cold - cold_compile:5.2f} s")
    print(f"warm cache: {warm:6.2f} s total, buildpack compile {warm_compile:5.2f} s, "
          f"everything else {warm - warm_compile:5.2f} s")
    print(f"slug: {info.size / 1e6:.1f} MB compressed; first unpack {unpack * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
