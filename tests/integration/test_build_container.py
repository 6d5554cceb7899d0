"""A real build container for the build tests: bubblewrap over the stack rootfs.

dynod's own build container comes from its Linux layer; until then (and to test the buildpack
runner apart from it) this one keeps the same contract: the stack read-only as /, the build dirs
bound at /app, /tmp/cache, /tmp/env and /buildpacks, every namespace but the network unshared,
uid BUILD_UID (61999, less the test worker's number) both inside and on the host (bwrap runs
unprivileged through setpriv, so the build really is that uid), and the whole process tree
killed on timeout or cancellation: the tree is the sandbox's pid namespace, and killing its
init (bwrap reports its pid on --info-fd) ends it.

No --die-with-parent: it is PR_SET_PDEATHSIG, which fires when the parent *thread* exits, and
trio forks from a worker thread that exits after 10 s idle -- every build would be SIGKILLed
ten seconds after it started.

The tests at the bottom prove that contract; the other build tests import this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from dynod.builds.buildpack import BuildTimeout

# Not the dyno uid (61000), so a build can never signal a dyno. "No process is left" is checked
# per container (its own bwrap and its own pid namespace, see live_processes), never by counting
# this uid host-wide: another test file's builds run as this uid at the same time.
# One uid per test worker (./test.sh runs test files in parallel): the build tests count the
# processes this uid has left, and another worker's builds must not be among them.
BUILD_UID = 61999 - int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def _build_stack_root() -> Path:
    """$DYNOD_TEST_BUILD_STACK, else the default stack as install.sh builds it (it has python3-venv,
    nodejs and npm), so that a fresh host runs these tests rather than skipping them."""
    if "DYNOD_TEST_BUILD_STACK" in os.environ:
        return Path(os.environ["DYNOD_TEST_BUILD_STACK"])
    from dynod.stack import StackStore

    store = StackStore(Path(os.environ.get("DYNOD_TEST_STACKS", "/var/lib/dynod/stacks")))
    try:
        return store.path(store.default)
    except Exception:  # noqa: BLE001 - not built: the tests below skip, saying so
        return Path("/nonexistent-stack")


STACK_ROOT = _build_stack_root()
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SKIP_TOP = {"proc", "dev", "tmp", "sys", "app", "buildpacks", "run"}

needs_stack = pytest.mark.skipif(
    not (STACK_ROOT / "usr/bin/python3").exists() or shutil.which("bwrap") is None,
    reason=f"needs bubblewrap and a stack rootfs at {STACK_ROOT} (DYNOD_TEST_BUILD_STACK)",
)


class BwrapBuildContainer:
    def __init__(self, *, app_dir: Path, cache_dir: Path, env_dir: Path, buildpacks_dir: Path,
                 stack_root: Path = STACK_ROOT, uid: int = BUILD_UID) -> None:
        self.app_dir, self.cache_dir = app_dir, cache_dir
        self.env_dir, self.buildpacks_dir = env_dir, buildpacks_dir
        self.stack_root = stack_root
        self.uid = uid
        self.last_pid: int | None = None
        # Every run's outer bwrap pid and its sandbox's pid namespace ("pid:[inode]"): what
        # live_processes() looks for afterwards.
        self.bwrap_pids: list[int] = []
        self.pid_namespaces: set[str] = set()

    def _argv(self, argv: list[str], env: dict[str, str]) -> list[str]:
        uid = str(self.uid)
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
               "bwrap", "--unshare-all", "--share-net", "--new-session",
               "--uid", uid, "--gid", uid, "--tmpfs", "/"]
        # A tmpfs root holding the stack's top-level entries read-only: the mount points /app and
        # /buildpacks can then be made without writing into the stack.
        for entry in sorted(self.stack_root.iterdir()):
            if entry.name in SKIP_TOP:
                continue
            if entry.is_symlink():
                cmd += ["--symlink", os.readlink(entry), f"/{entry.name}"]
            else:
                cmd += ["--ro-bind", str(entry), f"/{entry.name}"]
        # The host's network, so the host's trust store too (its egress may use its own CA).
        if (self.stack_root / HOST_CA_BUNDLE.lstrip("/")).is_file() and Path(HOST_CA_BUNDLE).is_file():
            cmd += ["--ro-bind", HOST_CA_BUNDLE, HOST_CA_BUNDLE]
        cmd += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
                "--bind", str(self.app_dir), "/app",
                "--bind", str(self.cache_dir), "/tmp/cache",
                "--ro-bind", str(self.env_dir), "/tmp/env",
                "--ro-bind", str(self.buildpacks_dir), "/buildpacks",
                "--chdir", "/app", "--clearenv"]
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        return [*cmd, "--", *argv]

    async def run(self, argv: list[str], *, env: dict[str, str], timeout: float,
                  output: Callable[[bytes], None]) -> int:
        info_read, info_write = os.pipe()
        try:
            bwrap_argv = self._argv(argv, env)
            bwrap_argv[bwrap_argv.index("bwrap") + 1:1] = ["--info-fd", str(info_write)]
            proc = await trio.lowlevel.open_process(
                bwrap_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(info_write,))
        finally:
            os.close(info_write)
        self.bwrap_pids.append(proc.pid)
        assert proc.stdout is not None
        info = trio.lowlevel.FdStream(info_read)
        timed_out = False
        init: int | None = None
        try:
            with trio.move_on_after(timeout) as scope:
                # bwrap reports the sandbox's init (its pid namespace's pid 1) as soon as it exists.
                raw = b""
                while chunk := await info.receive_some(4096):
                    raw += chunk
                self.last_pid = json.loads(raw)["child-pid"] if raw else None
                init = _pidfd(self.last_pid)
                if init is not None and (namespace := _pid_namespace(self.last_pid)) is not None:
                    # Read after the pidfd is open: the pid cannot be reused while it is held, so
                    # this is the sandbox's namespace (or the read fails because it ended).
                    self.pid_namespaces.add(namespace)
                while chunk := await proc.stdout.receive_some(65536):
                    output(chunk)
                await proc.wait()
            timed_out = scope.cancelled_caught
        finally:
            with trio.CancelScope(shield=True):
                await info.aclose()
                if proc.returncode is None:
                    await self._kill_tree(proc)
                await proc.stdout.aclose()
                if init is not None:
                    # bwrap may exit as soon as it knows the exit code, before the sandbox's init
                    # has torn the pid namespace down: wait for that init to end, so the tree
                    # is really gone when run() returns.
                    with trio.move_on_after(5):
                        await trio.lowlevel.wait_readable(init)
                    os.close(init)
        if timed_out:
            raise BuildTimeout(timeout)
        return proc.returncode

    async def _kill_tree(self, proc: trio.Process) -> None:
        # Killing the namespace's init kills every process in it; bwrap then reaps it and exits,
        # so nothing is left for the host's pid 1 to reap.
        if self.last_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.last_pid, signal.SIGKILL)
            with trio.move_on_after(5):
                await proc.wait()
                return
        proc.kill()
        await proc.wait()


@contextlib.contextmanager
def build_root() -> Iterator[Path]:
    """A scratch directory the build uid can reach (pytest's tmp_path sits under a 0700 dir)."""
    root = Path(tempfile.mkdtemp(prefix="dynod-build-test-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def make_build_dirs(root: Path) -> dict[str, Path]:
    """The four host directories of one build, /app and the cache writable by the build uid."""
    dirs = {name: root / name for name in ("app", "cache", "env", "buildpacks")}
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        if name in ("app", "cache"):
            os.chown(path, BUILD_UID, BUILD_UID)
    return dirs


def chown_tree(path: Path, uid: int = BUILD_UID) -> None:
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, uid)
    os.chown(path, uid, uid)


def _pidfd(pid: int | None) -> int | None:
    """A pidfd: it turns readable once the process has ended."""
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _pid_namespace(pid: int | None) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _alive(pid: int) -> bool:
    """Running or sleeping, not a zombie (already dead, waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def live_processes(*containers: BwrapBuildContainer) -> list[int]:
    """What is still alive of these containers' runs: their bwraps, and every process in the pid
    namespace of one of their sandboxes (a namespace holds only its own tree, so other tests'
    builds of the same uid are never counted)."""
    namespaces = set().union(*(c.pid_namespaces for c in containers))
    pids = [pid for c in containers for pid in c.bwrap_pids if _alive(pid)]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_namespace(int(entry)) in namespaces and _alive(int(entry)):
            pids.append(int(entry))
    return sorted(set(pids))


def processes_of_uid(uid: int = BUILD_UID) -> list[int]:
    """Live processes of ``uid``; zombies (already dead, waiting for a reaper) are not counted."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if state not in ("Z", "X"):
                pids.append(int(entry))
    return pids


# --- the double's own contract ------------------------------------------------------------

pytestmark = [pytest.mark.integration, needs_stack]


@pytest.fixture
def container() -> Iterator[BwrapBuildContainer]:
    with build_root() as root:
        dirs = make_build_dirs(root)
        yield BwrapBuildContainer(app_dir=dirs["app"], cache_dir=dirs["cache"], env_dir=dirs["env"],
                                  buildpacks_dir=dirs["buildpacks"])


async def test_runs_as_the_build_uid_with_app_writable_and_stack_read_only(container: BwrapBuildContainer):
    out = bytearray()
    code = await container.run(
        ["/bin/sh", "-c", "id -u; touch /app/made; touch /usr/x 2>/dev/null || echo stack-ro; echo $STACK"],
        env={"PATH": "/usr/bin:/bin", "STACK": "test-stack"}, timeout=30, output=out.extend)
    assert code == 0
    assert out.decode().split() == [str(BUILD_UID), "stack-ro", "test-stack"]
    assert (container.app_dir / "made").stat().st_uid == BUILD_UID


async def test_exit_code_is_returned(container: BwrapBuildContainer):
    assert await container.run(["/bin/sh", "-c", "exit 7"], env={}, timeout=30, output=lambda b: None) == 7


async def test_timeout_kills_the_whole_tree(container: BwrapBuildContainer):
    started = time.monotonic()
    with pytest.raises(BuildTimeout):
        # A grandchild that ignores SIGTERM and leaves the session: only the namespace's end kills it.
        await container.run(["/bin/sh", "-c", "(trap '' TERM; setsid sleep 300 &) ; sleep 300"],
                            env={"PATH": "/usr/bin:/bin"}, timeout=1.0, output=lambda b: None)
    assert time.monotonic() - started < 10
    await trio.sleep(0.2)
    assert container.pid_namespaces, "the sandbox's pid namespace was never seen"
    assert live_processes(container) == []


async def test_cancellation_kills_the_whole_tree(container: BwrapBuildContainer):
    with trio.move_on_after(1.0):
        await container.run(["/bin/sh", "-c", "sleep 300 & sleep 300"], env={"PATH": "/usr/bin:/bin"},
                            timeout=600, output=lambda b: None)
    await trio.sleep(0.2)
    assert container.pid_namespaces, "the sandbox's pid namespace was never seen"
    assert live_processes(container) == []


async def test_the_leak_check_sees_a_live_sandbox(container: BwrapBuildContainer):
    """live_processes is not blind: while a run sleeps, it finds the sandbox's processes."""
    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: container.run(["/bin/sh", "-c", "sleep 300"], env={"PATH": "/usr/bin:/bin"},
                                                 timeout=600, output=lambda b: None))
        with trio.fail_after(10):
            while not seen:
                await trio.sleep(0.05)
                seen = live_processes(container)
        nursery.cancel_scope.cancel()
    assert len(seen) >= 2  # bwrap outside, and the sleep (or its init) inside
    await trio.sleep(0.2)
    assert live_processes(container) == []
