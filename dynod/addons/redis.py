"""heroku-redis: one redis-server per add-on, from Debian's package.

Like PostgreSQL's, each add-on is its own server: its own cgroup (the plan's memory plus room
for the server itself), ``maxmemory`` and Heroku's default eviction policy (``noeviction``: a
full store refuses writes rather than silently dropping keys), ``maxclients`` the plan's
connections, a password (Heroku's ``redis://:PASSWORD@host:port``), and an append-only file
fsynced every second (Heroku's setting: a crash of the host may lose the last second).
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ..errors import UserError
from ..model import Addon
from .plans import REDIS, Plan
from .provider import Provisioned
from .servers import ServerSpec, ServerSupervisor, inner

SERVER = "/usr/bin/redis-server"
USER = "redis"  # Debian's system user for Redis
OVERHEAD_MB = 48  # the server itself, its buffers and AOF rewrite, beyond the plan's data


class RedisProvider:
    service = REDIS

    def __init__(self, *, root: Path, supervisor: ServerSupervisor, host: Callable[[], str],
                 ports: Callable[[], int]) -> None:
        self.root = root
        self.supervisor = supervisor
        self._host = host
        self._ports = ports

    def home(self, name: str) -> Path:
        return self.root / name

    def url(self, data: dict[str, Any]) -> str:
        return f"redis://:{data['password']}@{data['host']}:{data['port']}"

    def client(self, addon: Addon) -> Any:
        """A redis-py client over the add-on's unix socket (dynod's own way in)."""
        import redis

        return redis.Redis(unix_socket_path=str(self.home(addon.name) / "redis.sock"),
                           password=str(addon.provider_data["password"]), socket_timeout=5)

    def _write_config(self, name: str, plan: Plan, data: dict[str, Any]) -> None:
        home = self.home(name)
        lines = {
            "bind": self._host(), "port": data["port"], "protected-mode": "yes",
            "requirepass": data["password"], "maxmemory": f"{plan.memory_mb}mb",
            "maxmemory-policy": plan.maxmemory_policy, "maxclients": plan.connections,
            "dir": inner(name, "data"), "appendonly": "yes", "appendfsync": "everysec",
            "pidfile": inner(name, "redis.pid"), "daemonize": "no", "unixsocket": inner(name, "redis.sock"),
            "unixsocketperm": "700", "set-proc-title": "no", "logfile": '""', "save": '"3600 1 300 100 60 10000"',
        }
        text = "# written by dynod: see docs/addons.md\n" + "".join(f"{k} {v}\n" for k, v in lines.items())
        # CONFIG and a few others would let a client rewrite the server's files or settings.
        text += "rename-command CONFIG \"\"\nrename-command DEBUG \"\"\nrename-command MODULE \"\"\n"
        conf = home / "redis.conf"
        conf.write_text(text)
        conf.chmod(0o600)
        shutil.chown(conf, USER, USER)

    def _spec(self, addon_name: str, app: str, plan: Plan, password: str) -> ServerSpec:
        async def ready() -> None:
            def ping() -> None:
                import redis

                redis.Redis(unix_socket_path=str(self.home(addon_name) / "redis.sock"), password=password,
                            socket_timeout=2).ping()

            await trio.to_thread.run_sync(ping)

        return ServerSpec(key=addon_name, app=app, home=self.home(addon_name),
                          argv=(SERVER, inner(addon_name, "redis.conf")), user=USER,
                          pidfile=self.home(addon_name) / "redis.pid", memory_mb=plan.memory_mb + OVERHEAD_MB,
                          log_file=self.home(addon_name) / "redis.log", ready=ready)

    async def provision(self, *, addon_id: str, name: str, app: str, plan: Plan) -> Provisioned:
        home = self.home(name)
        data = {"port": self._ports(), "host": self._host(), "password": secrets.token_hex(24)}
        home.mkdir(parents=True, mode=0o700)
        try:
            (home / "data").mkdir(mode=0o700)
            for path in (home, home / "data"):
                shutil.chown(path, USER, USER)
            self._write_config(name, plan, data)
            await self.supervisor.ensure(self._spec(name, app, plan, str(data["password"])))
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.supervisor.stop(name)
                shutil.rmtree(home, ignore_errors=True)
            raise
        return Provisioned(config={"URL": self.url(data)}, provider_data=data)

    async def start(self, addon: Addon) -> None:
        if not (self.home(addon.name) / "redis.conf").exists():
            raise UserError(f"The data of add-on {addon.name} is missing from {self.home(addon.name)}; destroy "
                            "the add-on and create it again.", status=500, code="internal")
        await self.supervisor.ensure(self._spec(addon.name, addon.app, self.service.plan(addon.plan),
                                                str(addon.provider_data["password"])))

    async def deprovision(self, addon: Addon) -> None:
        await self.supervisor.stop(addon.name)
        await trio.to_thread.run_sync(lambda: shutil.rmtree(self.home(addon.name), ignore_errors=True))

    async def info(self, addon: Addon) -> list[tuple[str, str]]:
        plan = self.service.plan(addon.plan)

        def query() -> list[tuple[str, str]]:
            info = self.client(addon).info()
            return [("Plan", plan.name), ("Status", "available"), ("Version", str(info.get("redis_version"))),
                    ("Maxmemory", f"{plan.memory_mb} MB"),
                    ("Used memory", str(info.get("used_memory_human"))),
                    ("Maxmemory policy", plan.maxmemory_policy),
                    ("Clients", f"{info.get('connected_clients')}/{plan.connections}"), ("Add-on", addon.name)]

        return await trio.to_thread.run_sync(query)
