"""The build container: buildpacks run here, never on the host.

It is made the way a dyno is (the stack as root through overlayfs, a fresh PID/mount/UTS/IPC
namespace, a cgroup with memory and pids limits, the dyno uid with no capabilities), with three
differences a build needs: the build dir, cache dir and env dir are bind-mounted at /app,
/tmp/cache and /tmp/env, each buildpack read-only under /buildpacks/<name>, and its network
namespace hangs on the build bridge (``[network] build_subnet``), not the dyno bridge: pip and npm
reach their registries through NAT, while dynod's firewall keeps the build away from the host's
own services and from every dyno (docs/dynos.md). It resolves names as a dyno does, with the
stack's /etc/resolv.conf: the host's resolvers, loopback ones replaced (docs/stacks.md).
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..errors import UserError
from ..linux.cgroups import CgroupLimits
from ..linux.idmap import app_identity
from ..linux.net import DYNO_IFNAME
from ..linux.seccomp import seccomp_profile
from ..manager.dynos import INIT, DynoManager
from ..model import MiB
from .buildpack import BuildTimeout

BUILD_MEMORY_MB = 2048  # Heroku's build dynos are performance-sized; a pip or npm build needs room
BUILD_PIDS = 4096
BUILD_TMPFS_MB = 4096
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass
class SpawnerBuildContainer:
    manager: DynoManager
    stack: Path
    app: str
    build_dir: Path
    cache_dir: Path
    env_dir: Path
    buildpacks_dir: Path  # every chosen buildpack, one directory each, bound at /buildpacks
    _build_root: Path | None = field(default=None, init=False)  # the build image, once looked up

    @property
    def app_name(self) -> str:
        """The app this build is for. ``app`` holds the build's work dir name (<app>-<build id>);
        the cache dir is the app's own, named after it (BuildDirs.create)."""
        return self.cache_dir.name

    def _binds(self) -> list[dict[str, object]]:
        binds: list[dict[str, object]] = [
            {"source": str(self.build_dir), "target": "/app", "writable": True},
            {"source": str(self.cache_dir), "target": "/tmp/cache", "writable": True},
            {"source": str(self.env_dir), "target": "/tmp/env", "writable": False},
            {"source": str(self.buildpacks_dir), "target": "/buildpacks", "writable": False},
        ]
        if os.path.isfile(HOST_CA_BUNDLE):
            # Builds fetch from package registries through whatever CAs the host trusts (a site's
            # own CA included), so the host's bundle stands in for the stack's during the build.
            binds.append({"source": HOST_CA_BUNDLE, "target": HOST_CA_BUNDLE, "writable": False})
        return binds

    async def _build_image(self) -> Path:
        """Builds run on the stack's build image (debian-13-build: compilers and -dev headers) when
        it has one, like heroku-24-build beside heroku-24; dynos keep running on ``stack``."""
        stacks, name = self.manager.stacks, self.manager.settings.stack
        if self._build_root is None:
            if stacks.build_image(name) == name:
                self._build_root = self.stack
            else:
                self._build_root = await trio.to_thread.run_sync(stacks.ensure_build, name, lambda line: None)
        return self._build_root

    async def run(self, argv: list[str], *, env: dict[str, str], timeout: float,
                  output: Callable[[bytes], None]) -> int:
        settings = self.manager.settings
        spec = {
            "id": f"build.{self.app}.{secrets.token_hex(4)}",
            "hostname": str(uuid.uuid4()),
            "argv": [*INIT, *argv],
            "env": {"HOME": "/app", "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **env},
            "lower": [str(await self._build_image())],
            # The app's own uid (its build dirs, owned by the stack's dyno user, shown as its own).
            **app_identity(settings, self.manager.ledger.app_uid(self.app_name, settings.dynos.uid_first,
                                                                 settings.dynos.uid_count)),
            "tmpfs_mb": BUILD_TMPFS_MB,
            "cwd": "/app",
            "binds": self._binds(),
            "seccomp": seccomp_profile(settings, self.app_name),  # buildpack code is the app's code
        }
        limits = CgroupLimits(memory_max=BUILD_MEMORY_MB * MiB, memory_high=BUILD_MEMORY_MB * MiB,
                              pids_max=BUILD_PIDS, cpu_weight=100)
        network = self.manager.build_network
        if network is None:
            raise UserError("dynod has no build network: builds cannot run.")
        if not network.bridge_made:  # made on the first build; the spawner needs it to be there
            await network.ensure_bridge()
        address = network.pool.allocate()
        # "bridge": the spawner makes the veth as it forks, as for a cold dyno; else attach does.
        spec["net"] = {"ifname": DYNO_IFNAME, "address": address, "prefix": network.pool.prefix,
                       "gateway": network.pool.gateway, "on_bridge": network.bridge, "bridge": network.bridge}
        try:
            status = await self.manager.run_container(spec, limits, output=output, timeout=timeout,
                                                      attach=lambda pid: network.attach(address, pid))
        finally:
            network.pool.release(address)  # its veth went with the build's network namespace
        if status is None:
            raise BuildTimeout(timeout)
        return status
