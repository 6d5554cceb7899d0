"""The real default stack, built by debootstrap + apt (install.sh --deps-only builds it before the
suite, so here it is usually found built), and a real failing build that must leave nothing."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from dynod.errors import UserError
from dynod.settings import load_settings
from dynod.stack import StackStore, build_namespace_argv, definition_hash, mounts_beneath

pytestmark = pytest.mark.integration

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and chroot need root")


@pytest.fixture(scope="module")
def settings():
    return load_settings()


@pytest.fixture(scope="module")
def rootfs(settings) -> Path:
    if os.geteuid() != 0:
        pytest.skip("building the stack needs root")
    store = StackStore(settings.stacks_dir, default=settings.stack, uid=settings.dynos.uid,
                       gid=settings.dynos.gid)
    return store.ensure(settings.stack, print)


@pytest.fixture(scope="module")
def build_rootfs(settings) -> Path:
    if os.geteuid() != 0:
        pytest.skip("building the stack needs root")
    store = StackStore(settings.stacks_dir, default=settings.stack, uid=settings.dynos.uid,
                       gid=settings.dynos.gid)
    assert store.build_image(settings.stack) == f"{settings.stack}-build"
    return store.ensure_build(settings.stack, print)


def in_stack(rootfs: Path, script: str, uid: int) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as ``uid`` in a throwaway bubblewrap container whose / is the stack."""
    return subprocess.run(
        ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", str(rootfs), "/",
         "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/app",
         "--uid", str(uid), "--gid", str(uid), "--setenv", "HOME", "/app", "--chdir", "/app",
         "/bin/sh", "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
    )


@needs_root
def test_default_stack_has_init_python_and_node(rootfs: Path) -> None:
    for tool in ("usr/bin/tini", "usr/bin/tini-static", "usr/bin/python3", "usr/bin/node", "usr/bin/npm",
                 "usr/bin/git", "usr/bin/curl", "bin/bash"):
        assert os.access(rootfs / tool, os.X_OK), tool


@needs_root
def test_default_stack_has_the_dyno_user_with_an_empty_home(rootfs: Path, settings) -> None:
    uid, gid = settings.dynos.uid, settings.dynos.gid
    assert f"dyno:x:{uid}:{gid}:dyno:/app:/bin/bash" in (rootfs / "etc/passwd").read_text().splitlines()
    assert f"dyno:x:{gid}:" in (rootfs / "etc/group").read_text().splitlines()
    app = rootfs / "app"
    assert app.is_dir() and list(app.iterdir()) == []
    assert (app.stat().st_uid, app.stat().st_gid) == (uid, gid)


@needs_root
def test_default_stack_has_no_apt_lists_caches_or_build_leftovers(rootfs: Path) -> None:
    assert list((rootfs / "var/lib/apt/lists").glob("*")) == []
    assert list((rootfs / "var/cache/apt").rglob("*.deb")) == []
    assert list((rootfs / "var/cache/apt").glob("*.bin")) == []
    assert not (rootfs / "usr/sbin/policy-rc.d").exists()
    assert not (rootfs / "debootstrap").exists()
    resolv = rootfs / "etc/resolv.conf"
    assert not resolv.is_symlink() and "nameserver" in resolv.read_text()
    assert (rootfs / "etc/hostname").read_text() == "dyno\n"


@needs_root
def test_tools_run_inside_the_stack_as_the_dyno_user(rootfs: Path, settings) -> None:
    done = in_stack(rootfs, "id -un; python3 -c 'import ssl, venv; print(\"py ok\")'; "
                            "node -e 'console.log(\"node ok\")'; npm --version; tini --version; "
                            "python3 -m venv /tmp/v && /tmp/v/bin/pip --version",
                    settings.dynos.uid)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["dyno", "py ok", "node ok"]
    assert lines[3][0].isdigit()  # npm's version: npm runs (Debian's npm needs apt's full resolution)
    assert lines[4].startswith("tini version")
    assert lines[5].startswith("pip ")


@needs_root
def test_a_failed_build_leaves_no_stack_no_mounts_no_processes(tmp_path: Path) -> None:
    # A mirror nobody serves: the real debootstrap fails at once (a bad package would only fail
    # after a whole base system, ~40 s), and the cleanup path is the same.
    definitions = tmp_path / "defs"
    definitions.mkdir()
    (definitions / "broken.toml").write_text(
        'suite = "trixie"\nmirror = "http://127.0.0.1:9/debian"\npackages = ["tini"]\n')
    stacks = tmp_path / "stacks"
    store = StackStore(stacks, definitions, default="broken")
    # What a builder killed mid-debootstrap leaves: its temp dir with a filesystem still mounted.
    digest = definition_hash(store.definition("broken"), store.uid, store.gid)
    crashed = stacks / f".building-broken-{digest[:12]}-99999"
    (crashed / "rootfs/proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "dynod-test", str(crashed / "rootfs/proc")],
                   check=True)
    lines: list[str] = []
    try:
        with pytest.raises(UserError) as err:
            store.build("broken", lines.append)
    finally:  # never leave the mount behind, even when the sweep under test is broken
        if mounts_beneath(crashed, Path("/proc/self/mountinfo").read_text()):
            subprocess.run(["umount", "--lazy", str(crashed / "rootfs/proc")], check=False)
    assert any("left by an interrupted build" in line for line in lines)
    assert not crashed.exists()
    assert "Building stack broken failed (debootstrap exit" in str(err.value)
    assert "\n" not in str(err.value)
    assert not store.is_built("broken")
    left = sorted(p.name for p in stacks.iterdir() if p.name.startswith((".building", "broken-")))
    assert len(left) == 1 and left[0].endswith(".failed.log")  # debootstrap's log, named in the error
    assert f"Full log: {stacks / left[0]}" in str(err.value)
    assert mounts_beneath(stacks, Path("/proc/self/mountinfo").read_text()) == []
    leftover = subprocess.run(["pgrep", "-f", str(stacks)], capture_output=True, text=True, check=False)
    assert leftover.stdout == ""
    shutil.rmtree(stacks)


# The run image carries the libraries apps load; the build image adds what compiles against them.
RUNTIME_LIBRARIES = ("libpq.so.5", "libcairo.so.2", "libpango-1.0.so.0", "libpangocairo-1.0.so.0",
                     "libgdk_pixbuf-2.0.so.0", "libfontconfig.so.1", "libjpeg.so.62", "libpng16.so.16",
                     "libxml2.so.2", "libxslt.so.1", "libmagic.so.1", "libyaml-0.so.2")


@needs_root
def test_run_image_has_the_common_runtime_libraries_and_no_compiler(rootfs: Path, settings) -> None:
    done = in_stack(rootfs, "for lib in " + " ".join(RUNTIME_LIBRARIES) + "; do ldconfig -p | grep -q \"$lib \" "
                    "|| echo missing $lib; done; magick -version | head -1; fc-list | grep -c DejaVu; "
                    "command -v gcc cc pg_config || echo no-compiler", settings.dynos.uid)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert not [line for line in lines if line.startswith("missing")], lines
    assert lines[0].startswith("Version: ImageMagick 7") and int(lines[1]) > 0
    assert lines[-1] == "no-compiler"


@needs_root
def test_build_image_is_the_run_image_plus_compilers_and_headers(rootfs: Path, build_rootfs: Path,
                                                                  settings) -> None:
    assert build_rootfs != rootfs
    done = in_stack(build_rootfs, "gcc --version | head -1; pg_config --version; pkg-config --modversion cairo pango; "
                    "python3 -c 'import sysconfig, os; print(os.path.exists(sysconfig.get_paths()[\"include\"]"
                    " + \"/Python.h\"))'; ls /usr/include/node/node_api.h; "
                    "printf '#include <libpq-fe.h>\\nint main(void){return PQlibVersion() > 0 ? 0 : 1;}\\n' > /tmp/t.c"
                    " && cc -I$(pg_config --includedir) /tmp/t.c -o /tmp/t -lpq && /tmp/t && echo linked",
                    settings.dynos.uid)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gcc ") and lines[1].startswith("PostgreSQL ")
    assert lines[4] == "True" and lines[-1] == "linked"
    # Everything in the run image is in the build image too (what was built against it runs there).
    run_packages = set(json.loads((rootfs.parent / "stack.json").read_text())["packages"])
    assert run_packages <= set(json.loads((build_rootfs.parent / "stack.json").read_text())["packages"])


def _pids_running(marker: str) -> str:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout


@needs_root
def test_apt_namespace_mounts_proc_only_inside_and_leaves_nothing(tmp_path: Path) -> None:
    # What the apt steps run under: /proc mounted at the target's /proc, seen by the command
    # (java needs /proc/self/exe) but never by the host, and processes a maintainer script
    # leaves behind die with the namespace.
    (tmp_path / "proc").mkdir()
    marker = f"{3000 + secrets.randbelow(60000)}.{secrets.randbelow(10**6)}"
    done = subprocess.run(
        [*build_namespace_argv(tmp_path), "sh", "-c",
         f"readlink {tmp_path}/proc/self/exe; ls {tmp_path}/proc | grep -c '^[0-9]'; "
         f"(sleep {marker} &) ; exit 0"],
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    exe, count = done.stdout.split()
    assert exe.endswith("readlink")
    assert int(count) < 10  # its own PID namespace: not the host's hundreds of processes
    assert mounts_beneath(tmp_path, Path("/proc/self/mountinfo").read_text()) == []
    assert _pids_running(f"sleep {marker}") == ""
    assert list((tmp_path / "proc").iterdir()) == []


@needs_root
def test_apt_namespace_killed_mid_step_leaves_no_mount_or_process(tmp_path: Path) -> None:
    # An interrupted build: SIGKILL, so no cleanup code of ours runs; the kernel drops the mount.
    (tmp_path / "proc").mkdir()
    marker = f"{3000 + secrets.randbelow(60000)}.{secrets.randbelow(10**6)}"
    proc = subprocess.Popen([*build_namespace_argv(tmp_path), "sleep", marker], start_new_session=True)
    try:
        for _ in range(100):
            if _pids_running(f"sleep {marker}"):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert _pids_running(f"sleep {marker}")
        assert mounts_beneath(tmp_path, Path("/proc/self/mountinfo").read_text()) == []
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for _ in range(100):
        if not _pids_running(f"sleep {marker}"):
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert _pids_running(f"sleep {marker}") == ""
    assert mounts_beneath(tmp_path, Path("/proc/self/mountinfo").read_text()) == []


@needs_root
def test_run_image_has_a_jre_and_the_add_on_clients(rootfs: Path, settings) -> None:
    # The JRE's postinst ran java during the build (it needs /proc); psql and redis-cli are what
    # `dynoctl pg:psql` and `redis:cli` run in a one-off dyno.
    done = in_stack(rootfs, "java -version 2>&1 | head -1; psql --version; redis-cli --version; "
                    "command -v javac mvn || echo no-jdk", settings.dynos.uid)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("openjdk version"), lines
    assert lines[1].startswith("psql (PostgreSQL) ") and lines[2].startswith("redis-cli ")
    assert lines[-1] == "no-jdk"


@needs_root
def test_build_image_has_a_jdk_and_maven_with_the_default_plugins(build_rootfs: Path, settings) -> None:
    done = in_stack(build_rootfs, "javac -version 2>&1; mvn -v -B 2>/dev/null | head -1; "
                    "for p in clean resources compiler surefire jar install; do "
                    "ls -d /usr/share/maven-repo/org/apache/maven/plugins/maven-$p-plugin >/dev/null 2>&1 "
                    "|| echo missing $p; done", settings.dynos.uid)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("javac ") and lines[1].startswith("Apache Maven "), lines
    assert not [line for line in lines if line.startswith("missing")], lines
