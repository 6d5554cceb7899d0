"""The build container: buildpacks run here, never on the host.

It is made the way a dyno is (the stack as root through overlayfs, a fresh PID/mount/UTS/IPC
namespace, a cgroup with memory and pids limits, the dyno uid with no capabilities), with three
differences a build needs: the build dir, cache dir and env dir are bind-mounted at /app,
/tmp/cache and /tmp/env, each buildpack read-only under /buildpacks/<name>, and it keeps the
host's network namespace so that pip and npm can reach their registries.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..linux.cgroups import CgroupLimits
from ..manager.dynos import INIT, DynoManager
from ..model import MiB
from .buildpack import BuildTimeout

BUILD_MEMORY_MB = 2048  # Heroku's build dynos are performance-sized; a pip or npm build needs room
BUILD_PIDS = 4096
BUILD_TMPFS_MB = 4096


@dataclass
class SpawnerBuildContainer:
    manager: DynoManager
    stack: Path
    app: str
    build_dir: Path
    cache_dir: Path
    env_dir: Path
    buildpacks: dict[str, Path] = field(default_factory=dict)  # name -> host dir

    def _binds(self) -> list[dict[str, object]]:
        binds: list[dict[str, object]] = [
            {"source": str(self.build_dir), "target": "/app", "writable": True},
            {"source": str(self.cache_dir), "target": "/tmp/cache", "writable": True},
            {"source": str(self.env_dir), "target": "/tmp/env", "writable": False},
        ]
        for name, path in sorted(self.buildpacks.items()):
            binds.append({"source": str(path), "target": f"/buildpacks/{name}", "writable": False})
        return binds

    def prepare(self) -> None:
        """Hand the writable dirs to the build uid: buildpacks must not run as root."""
        uid, gid = self.manager.settings.dynos.uid, self.manager.settings.dynos.gid
        for top in (self.build_dir, self.cache_dir):
            for base, dirs, files in os.walk(top):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(base, name), uid, gid)
            os.chown(top, uid, gid)

    async def run(self, argv: list[str], *, env: dict[str, str], timeout: float,
                  output: Callable[[bytes], None]) -> int:
        settings = self.manager.settings
        spec = {
            "id": f"build.{self.app}.{secrets.token_hex(4)}",
            "hostname": str(uuid.uuid4()),
            "argv": [*INIT, *argv],
            "env": {"HOME": "/app", "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **env},
            "lower": [str(self.stack)],
            "uid": settings.dynos.uid,
            "gid": settings.dynos.gid,
            "tmpfs_mb": BUILD_TMPFS_MB,
            "cwd": "/app",
            "share_host_net": True,
            "binds": self._binds(),
        }
        limits = CgroupLimits(memory_max=BUILD_MEMORY_MB * MiB, memory_high=BUILD_MEMORY_MB * MiB,
                              pids_max=BUILD_PIDS, cpu_weight=100)
        status = await self.manager.run_container(spec, limits, output=output, timeout=timeout)
        if status is None:
            raise BuildTimeout(timeout)
        return status
