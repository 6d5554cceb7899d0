"""One dyno as the manager holds it while it runs (``LiveDyno``), a warm dyno in the pool, the
manager's collaborators as Protocols, and the constants the stages share.

The stages of the dyno manager (reconciling, starting, watching, stopping, adopting) each read
and write these; ``DynoManager`` (dynos.py) owns them and is the only public face.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from ..linux.cgroups import CgroupLimits, DynoCgroup
from ..model import DynoRecord, MiB
from .load_average import LoadAverage

log = logging.getLogger("dynod.manager")
T = TypeVar("T")
SPAWNER_LOST = "the spawner went away during the build"

ONE_OFF_TYPE = "run"
ROUTES_SETTLE = 0.2  # seconds for the router's workers to apply a route change
DEFAULT_PATH = "/app/.heroku/python/bin:/app/.heroku/node/bin:/app/bin:/usr/local/bin:/usr/bin:/bin"
# Heroku sources .profile.d scripts, then .profile, then runs the command, all in one bash.
PROFILE = (
    'for f in /app/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; unset f; '
    "[ -r /app/.profile ] && . /app/.profile; "
)
INIT = ["/usr/bin/tini", "-g", "--"]


class LogSink(Protocol):
    def emit(self, app: str, source: str, dyno: str, message: str, *, at: float | None = None) -> None: ...
    async def pump(self, app: str, dyno: str, fd: int) -> None: ...


class SlugSource(Protocol):
    def unpacked(self, slug_id: str, uid: int, gid: int) -> Path: ...


class StackSource(Protocol):
    def ensure(self, name: str, progress: Callable[[str], None]) -> Path: ...


@dataclass(eq=False)
class LiveDyno:
    record: DynoRecord
    cgroup: DynoCgroup | None
    fds: dict[str, int]
    exited: trio.Event = field(default_factory=trio.Event)
    started: trio.Event = field(default_factory=trio.Event)
    exit_status: int | None = None
    stopping: bool = False
    killed_for: str = ""  # "R10", "R15": why dynod killed it, when it did
    cycle_at: float = math.inf
    oom_kills: int = 0
    last_r14: float = 0.0
    load: LoadAverage = field(default_factory=LoadAverage)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def app(self) -> str:
        return self.record.app

    @property
    def name(self) -> str:
        return self.record.name


# A warm dyno's limits until it is taken: what its idle Python fork needs, no more.
WARM_LIMITS = CgroupLimits(memory_max=256 * MiB, memory_high=256 * MiB, pids_max=16, cpu_weight=100)


@dataclass(eq=False)
class WarmDyno:
    pool_id: str
    pid: int
    address: str
    cgroup: DynoCgroup


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def safe(fn: Callable[[], Any], default: Any) -> Any:
    """``fn()``, or ``default`` if it raised OSError (a cgroup file of a dyno that just went)."""
    try:
        return fn()
    except OSError:
        return default
