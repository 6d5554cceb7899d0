"""What survives a dynod restart: each app's recent lines and its drains, under logs_dir/<app>/.

Lines: two append-only files per app, ``current.log`` and ``previous.log``. Every batch the
stream accepts is appended to current.log with one write(2) (O_APPEND, so a batch is never torn
by another writer); once current.log holds ``lines`` lines it becomes previous.log (the old one
is unlinked first) and a fresh one is begun. Together they always hold at least the last
``lines`` lines and at most twice that, and a rotation costs a rename instead of rewriting the ring.

Durability (the fsync policy): lines are not fsynced. A write(2) is in the page cache the moment
it returns, so a dynod crash or restart loses nothing it had accepted; only a host crash can
lose the last seconds, which the kernel had not yet written back. Logs are Heroku's best-effort
stream, and an fsync per batch would cap throughput at the disk's flush rate. Drains are
configuration: drains.json is written to a temporary file, fsynced, renamed into place and the
directory fsynced, so it is always either the old or the new list, never a mix.

A write that fails (disk full, I/O error) never reaches the dyno or the caller: the app's file is
closed, the error counted, and writing retried after ``RETRY_AFTER`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

from ..model import APP_NAME_RE
from .drain import Drain
from .format import parse_line

CURRENT = "current.log"
PREVIOUS = "previous.log"
DRAINS = "drains.json"
RETRY_AFTER = 5.0


def app_dir(logs_dir: Path, app: str) -> Path | None:
    """The app's directory, or None for a name that is not an app name (never a path to escape by)."""
    if not APP_NAME_RE.match(app):
        return None
    return logs_dir / app


def _read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    # A torn last line (the host died inside a write) has no newline: it is left out.
    text = data[: data.rfind(b"\n") + 1].decode("utf-8", "replace")
    return [line for line in text.split("\n") if line and parse_line(line) is not None]


class AppLogFile:
    """The append-only pair of files holding one app's recent lines."""

    def __init__(self, directory: Path, lines: int) -> None:
        self.directory = directory
        self.limit = lines
        self._fd: int | None = None
        self._count = 0  # lines in current.log
        self._failed_at: float | None = None
        self.errors = 0
        self.last_error: str | None = None

    def load(self) -> list[str]:
        """The lines kept on disk, oldest first, at most ``limit`` of them."""
        previous = _read_lines(self.directory / PREVIOUS)
        current = _read_lines(self.directory / CURRENT)
        self._count = len(current)
        return (previous + current)[-self.limit:]

    def _open(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        return os.open(self.directory / CURRENT, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def append(self, lines: list[str]) -> None:
        if self._fd is None:
            if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER:
                return
            try:
                self._fd = self._open()
            except OSError as exc:
                self._fail(exc)
                return
        data = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # only a signal or a full disk splits a regular-file write
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self._fail(exc)
            return
        self._count += len(lines)
        if self._count >= self.limit:
            self._rotate()

    def _rotate(self) -> None:
        # unlink + rename rather than rename over previous.log: ext4 (auto_da_alloc) flushes a
        # file renamed over another to disk at once, 1.6 ms against 0.1 ms here, once per
        # `lines` lines. A crash between the two loses only the older half, never current.log.
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / PREVIOUS)
            os.rename(self.directory / CURRENT, self.directory / PREVIOUS)
        except OSError as exc:
            self._fail(exc)
            return
        self.close()
        self._count = 0

    def _fail(self, exc: OSError) -> None:
        self.errors += 1
        self.last_error = f"{self.directory}: {exc.strerror or exc}"
        self._failed_at = time.monotonic()
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_drains(directory: Path, drains: list[Drain]) -> None:
    """Atomically replace the app's drain list (raises OSError: the caller refuses the change)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / DRAINS
    tmp = directory / f".{DRAINS}.{os.getpid()}.tmp"
    data = json.dumps([d.to_json() for d in drains], indent=1).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


def load_drains(directory: Path) -> list[Drain]:
    try:
        data = json.loads((directory / DRAINS).read_bytes())
    except FileNotFoundError:
        return []
    return [Drain.from_json(item) for item in data]


def known_apps(logs_dir: Path) -> list[str]:
    try:
        entries = list(logs_dir.iterdir())
    except FileNotFoundError:
        return []
    return sorted(p.name for p in entries if p.is_dir() and APP_NAME_RE.match(p.name))


def remove_app(logs_dir: Path, app: str) -> None:
    directory = app_dir(logs_dir, app)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
