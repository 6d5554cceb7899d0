"""The prepared restore: the next build's copy of an app's cached venv, made between builds.

A warm Python build restores the venv its build cache holds by copying it into /app: the slug's
tree must share no inode with the cache, or a build writing in its venv in place (a hook, pip)
would change the cache, and the tree of the release that was built from it. That copy creates
~1,500 inodes, and on a busy disk it was most of a warm push (docs/builds.md).

So the copy is made ahead of time. Once a build's container has exited nothing changes its app's
cache until the next build of the app, so dynod copies the cached venv then, in the background,
as the build's own uid (``cp -a``, what the buildpack itself would run), and notes the
fingerprint of what it copied: every path's size, inode, mtime, ctime and mode, as the buildpack
lists them. The next build gets the copy in its /app at ``.dynod-restore/python/{venv,listing}``;
the buildpack renames it into place only if the cached venv still has that fingerprint (no write
leaves the ctime of what it wrote as it was), and otherwise copies as before. A copy that is not
finished when the next build wants it is waited for, one not begun is dropped (that build copies
for itself, as it would have anyway), one that failed is simply not there.

The copy runs with the build uid's rights only, on directory fds that dynod opened without
following links: the cache is the app's own, and a link in it must not make the copy read from
anywhere else on the host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path

import trio

from ..model import check_app_name
from .archive import remove_tree

log = logging.getLogger("dynod.builds.restore")

RESTORE_DIR = ".dynod-restore"  # in the build's /app: never part of a slug (the buildpack removes it)
CACHED_VENV = ("python", "venv")  # the Python buildpack's venv, inside the app's cache dir

# $1: the fd of the cached venv, $2: the stage's. `find .` lists %P exactly as the buildpack's
# listing() of "$cache_dir/python/venv" does. The listing before and after the copy must agree:
# nothing runs in the cache now, so a difference means the copy cannot be trusted.
_COPY = r"""set -eu
cd "/proc/self/fd/$1"
stage="/proc/self/fd/$2"
listing() { find . -printf '%s %i %T@ %C@ %m %P\n' | sha256sum; }
before=$(listing)
cp -a . "$stage/venv"
[ "$before" = "$(listing)" ]
printf '%s\n' "$before" > "$stage/listing"
"""

# The copy waits this long after a build: the release's new dynos boot meanwhile (0.1-0.3 s for
# the flask example) without the copy's disk writes. A build that comes sooner copies for itself.
SETTLE_SECONDS = 2.0

StartSoon = Callable[..., None]  # a nursery's start_soon: the copy outlives the build that began it


class PreparedRestores:
    """Per app, at most one prepared copy of its cached venv under ``root/<app>``."""

    def __init__(self, root: Path, cache_root: Path, *, uid: int, gid: int,
                 settle: float = SETTLE_SECONDS) -> None:
        self.root = root
        self.settle = settle
        self.cache_root = cache_root
        self.uid, self.gid = uid, gid
        self._copying: dict[str, _Copying] = {}
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def start(self, app: str, start_soon: StartSoon) -> None:
        """Begin copying the app's cached venv for its next build (its build container has exited),
        ``settle`` seconds from now; a build of the app before then does without it."""
        check_app_name(app)
        if app in self._copying:
            return  # one copy at a time; builds of one app run one at a time, so this is that one
        copying = _Copying(self.settle)
        self._copying[app] = copying  # before the task runs: take() must find it at once
        try:
            start_soon(self._copy, app, copying)
        except RuntimeError:  # the nursery has closed: dynod is stopping, no next build to prepare
            del self._copying[app]

    async def take(self, app: str, app_dir: Path) -> bool:
        """Move the prepared copy into ``app_dir/.dynod-restore/python``; False if there is none."""
        copying = self._copying.get(app)
        if copying is not None:
            if not copying.started:
                # Still settling (a push right after the last build): the buildpack's own copy,
                # which overlaps its cache check, is no slower than starting this one now.
                copying.scope.cancel()
            await copying.done.wait()
        try:
            return await trio.to_thread.run_sync(self._move_in, app, app_dir)
        except OSError as exc:  # the buildpack copies as before: a slower build, not a failed one
            log.warning("the prepared venv of %s was not used: %s", app, exc)
            return False

    def forget(self, app: str) -> None:
        """apps:destroy: a copy being made stops, and a prepared one goes."""
        copying = self._copying.get(app)
        if copying is not None:
            copying.scope.cancel()
        else:
            self._clear(app)  # a running copy clears its stage itself once cancelled

    async def _copy(self, app: str, copying: _Copying) -> None:
        scope = copying.scope
        try:
            with scope:
                await trio.sleep(copying.settle)
                copying.started = True
                await trio.to_thread.run_sync(self._clear, app)
                fds = await trio.to_thread.run_sync(self._open, app)
                if fds is None:
                    return
                try:
                    # Its own process group, all of it killed on a cancel: sh's cp (and find) would
                    # otherwise go on writing in the stage as orphans while it is being removed.
                    result = await trio.run_process(
                        ["/bin/sh", "-c", _COPY, "sh", *map(str, fds)], pass_fds=fds, user=self.uid,
                        group=self.gid, extra_groups=[], capture_stdout=True, capture_stderr=True, check=False,
                        start_new_session=True, deliver_cancel=copying.kill)
                finally:
                    for fd in fds:
                        os.close(fd)
                if result.returncode != 0:
                    log.warning("preparing the cached venv of %s for its next build failed (exit %d): %s", app,
                                result.returncode, result.stderr.decode(errors="replace").strip()[-300:])
                    await trio.to_thread.run_sync(self._clear, app)
            if scope.cancelled_caught:
                await trio.to_thread.run_sync(self._clear_after, app, copying)
        except OSError as exc:  # the next build copies as before: a slower build, not a failed one
            log.warning("preparing the cached venv of %s for its next build failed: %s", app, exc)
            with contextlib.suppress(OSError):
                self._clear_after(app, copying)
        except BaseException:  # dynod stopping: trio's Cancelled, which may come in a group
            with trio.CancelScope(shield=True), contextlib.suppress(OSError):
                await trio.to_thread.run_sync(self._clear_after, app, copying)
            raise
        finally:
            del self._copying[app]
            copying.done.set()

    def _open(self, app: str) -> tuple[int, int] | None:
        """(the cached venv, a fresh stage owned by the build uid) as directory fds, or None."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = -1
        try:
            fd = os.open(self.cache_root / app, flags)
            for name in CACHED_VENV:
                inner = os.open(name, flags, dir_fd=fd)
                os.close(fd)
                fd = inner
        except OSError:  # no venv cached (not a Python app, a cold cache), or a link where it was
            if fd >= 0:
                os.close(fd)
            return None
        try:
            stage = self.root / app
            os.mkdir(stage, 0o700)
            os.chown(stage, self.uid, self.gid)
            return fd, os.open(stage, flags)
        except BaseException:
            os.close(fd)
            raise

    def _move_in(self, app: str, app_dir: Path) -> bool:
        # The name is dynod's (docs/builds.md): a source's own is removed, never taken for a copy.
        remove_tree(app_dir / RESTORE_DIR)
        stage = self.root / app
        try:
            listing = os.lstat(stage / "listing")
            venv = os.lstat(stage / "venv")
        except OSError:
            self._clear(app)  # nothing prepared, or a copy that did not finish
            return False
        if not (stat.S_ISREG(listing.st_mode) and stat.S_ISDIR(venv.st_mode)):
            self._clear(app)
            return False
        target = app_dir / RESTORE_DIR
        os.mkdir(target, 0o755)
        os.chown(target, self.uid, self.gid)
        try:
            os.rename(stage, target / CACHED_VENV[0])
        except OSError:  # e.g. another filesystem: the buildpack copies as before
            os.rmdir(target)
            self._clear(app)
            return False
        return True

    def _clear(self, app: str) -> None:
        remove_tree(self.root / check_app_name(app))

    def _clear_after(self, app: str, copying: _Copying) -> None:
        """Clear the stage once every process of a killed copy has gone (then none writes in it)."""
        if copying.pgid is not None:
            end = time.monotonic() + _GROUP_GONE_SECONDS
            while time.monotonic() < end:
                try:
                    os.killpg(copying.pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.01)
        self._clear(app)


_GROUP_GONE_SECONDS = 5.0  # a SIGKILLed cp is reaped by init within milliseconds


class _Copying:
    """One copy under way: ``started`` once it settled, ``done`` when it ended."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.started = False
        self.done = trio.Event()
        self.scope = trio.CancelScope()
        self.pgid: int | None = None  # the copy's process group, once a cancel killed it

    async def kill(self, process: trio.Process) -> None:
        """run_process's cancel: the whole group (sh, cp, find, sha256sum) at once."""
        self.pgid = process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
