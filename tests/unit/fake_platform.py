"""An in-memory PlatformService for API and CLI tests: real rules, no kernel.

The rules are the daemon's own (``dynod.platform.rules``: config changes, formation checks, what
makes a release), so the API and dynoctl are tested against what dynod decides. It keeps enough
state (apps, releases, config, formation, dynos, logs, drains, domains, certs, stacks) for the
API and dynoctl to be driven end to end, and records what it was asked so tests can assert that
a request reached it — or, for bad input, that it did not.
"""

from __future__ import annotations

import hashlib
import math
import shlex
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import trio

from dynod.api.service import Json
from dynod.errors import Conflict, NotFound, UserError
from dynod.model import Formation, Release, check_app_name, dyno_size
from dynod.platform import rules

NOW = "2026-11-26T12:00:00Z"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeAttachedDyno:
    """A one-off that understands a few commands, enough to exercise every attach frame.

    ``echo WORDS`` prints them; ``cat`` copies stdin to stdout until EOF; ``err WORDS`` prints to
    stderr; ``exit N`` exits N; ``sleep`` waits until killed (exit 137); ``size`` prints the last
    TTY size; ``crash`` raises inside receive(), as a broken platform would.
    """

    def __init__(self, name: str, command: str, tty: bool, rows: int, cols: int) -> None:
        self.name = name
        self.argv = shlex.split(command)
        self.tty = tty
        self.size = (rows, cols)
        self.resizes: list[tuple[int, int]] = []
        self.stdin = bytearray()
        self.stdin_closed = False
        self.killed = False
        self._send, self._receive = trio.open_memory_channel[tuple[str, bytes] | None](math.inf)
        self._exit_code: int | None = None
        self._exited = trio.Event()
        self._start()

    def _finish(self, code: int) -> None:
        if self._exit_code is None:
            self._exit_code = code
            self._send.send_nowait(None)
            self._exited.set()

    def _start(self) -> None:
        verb, args = self.argv[0], self.argv[1:]
        if verb == "echo":
            self._send.send_nowait(("stdout", (" ".join(args) + "\n").encode()))
            self._finish(0)
        elif verb == "err":
            self._send.send_nowait(("stderr", (" ".join(args) + "\n").encode()))
            self._finish(0)
        elif verb == "exit":
            self._finish(int(args[0]))
        elif verb == "size":
            self._send.send_nowait(("stdout", f"{self.size[0]}x{self.size[1]}\n".encode()))
            self._finish(0)

    async def send_stdin(self, data: bytes) -> None:
        self.stdin += data
        if self.argv[0] == "cat" and self._exit_code is None:
            self._send.send_nowait(("stdout", data))

    async def close_stdin(self) -> None:
        self.stdin_closed = True
        if self.argv[0] == "cat":
            self._finish(0)

    async def resize(self, rows: int, cols: int) -> None:
        self.resizes.append((rows, cols))
        self.size = (rows, cols)
        if self.argv[0] == "sleep" and self.argv[1:] == ["until-resized"]:
            self._send.send_nowait(("stdout", f"resized {rows}x{cols}\n".encode()))
            self._finish(0)

    async def receive(self) -> tuple[str, bytes] | None:
        if self.argv[0] == "crash":
            raise RuntimeError("the fake dyno broke")
        return await self._receive.receive()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self._exit_code is not None
        return self._exit_code

    async def kill(self) -> None:
        self.killed = True
        self._finish(137)


class FakePlatform:
    def __init__(self) -> None:
        self.apps: dict[str, Json] = {}
        self.releases: dict[str, list[Json]] = {}
        self.configs: dict[str, dict[str, str]] = {}  # the current release's config
        self.release_configs: dict[str, list[dict[str, str]]] = {}  # each release's, by version - 1
        self.formations: dict[str, dict[str, Json]] = {}
        self.dynos: dict[str, list[Json]] = {}
        self.logs: dict[str, list[str]] = {}
        self.drains: dict[str, list[Json]] = {}
        self.domains: dict[str, list[Json]] = {}
        self.certs: dict[str, list[Json]] = {}
        self.slugs: dict[str, bytes] = {}
        self.slug_process_types: dict[str, str] = {"web": "python3 -m http.server $PORT"}
        self.stacks: list[Json] = [
            {"name": "debian-13", "hash": "ab12cd", "built": False, "path": "/var/lib/dynod/stacks/debian-13",
             "size_bytes": None, "default": True},
        ]
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.attached: list[FakeAttachedDyno] = []
        self.shutdowns: list[bool] = []
        self.fail_with: BaseException | None = None  # raised by the next call, then cleared
        self._log_listeners: dict[str, list[trio.MemorySendChannel[str]]] = {}
        self._next_id = 1
        self._run_number = 4820

    # helpers for tests

    def _call(self, name: str, *args: object) -> None:
        self.calls.append((name, args))
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error

    def called(self, name: str) -> bool:
        return any(call[0] == name for call in self.calls)

    def emit_log(self, app: str, line: str) -> None:
        self.logs.setdefault(app, []).append(line)
        for channel in self._log_listeners.get(app, []):
            channel.send_nowait(line)

    def end_log_streams(self, app: str) -> None:
        for channel in self._log_listeners.pop(app, []):
            channel.close()

    def _app(self, app: str) -> Json:
        try:
            return self.apps[app]
        except KeyError:
            raise NotFound(f"Couldn't find that app: {app}.") from None

    def _release(self, app: str, slug_id: str | None, description: str, process_types: dict[str, str],
                 config: dict[str, str] | None = None) -> Json:
        releases = self.releases[app]
        for old in releases:
            old["current"] = False
        if config is not None:
            self.configs[app] = dict(config)
        release = {
            "version": len(releases) + 1, "description": description, "created_at": NOW,
            "status": "succeeded", "current": True, "slug": {"id": slug_id} if slug_id else None,
            "process_types": dict(process_types), "config_var_names": sorted(self.configs[app]),
        }
        releases.append(release)
        self.release_configs[app].append(dict(self.configs[app]))
        self.apps[app]["current_release"] = release["version"]
        self.apps[app]["released_at"] = NOW
        for type, command in process_types.items():
            self.formations[app].setdefault(
                type, {"type": type, "quantity": 1 if type == "web" else 0, "size": "standard-1X",
                       "command": command})
        return release

    # apps

    async def list_apps(self) -> list[Json]:
        self._call("list_apps")
        return [self.apps[name] for name in sorted(self.apps)]

    async def create_app(self, name: str | None) -> Json:
        self._call("create_app", name)
        name = check_app_name(name) if name is not None else f"app-{self._next_id:04d}"
        if name in self.apps:
            raise Conflict(f"Name {name} is already taken: choose another.")
        self.apps[name] = {"id": str(self._next_id), "name": name, "created_at": NOW,
                           "web_url": f"http://{name}.localhost/", "stack": "debian-13", "maintenance": False,
                           "released_at": None, "current_release": None}
        self._next_id += 1
        self.releases[name] = []
        self.configs[name] = {}
        self.release_configs[name] = []
        self.formations[name] = {}
        self.dynos[name] = []
        return self.apps[name]

    async def get_app(self, app: str) -> Json:
        self._call("get_app", app)
        return self._app(app)

    async def destroy_app(self, app: str) -> None:
        self._call("destroy_app", app)
        self._app(app)
        del self.apps[app]
        self.end_log_streams(app)

    async def set_routing_policy(self, app: str, policy: str) -> Json:
        self._call("set_routing_policy", app, policy)
        self._app(app)["routing_policy"] = policy
        return self.apps[app]

    async def set_maintenance(self, app: str, on: bool) -> Json:
        self._call("set_maintenance", app, on)
        self._app(app)["maintenance"] = on
        return self.apps[app]

    # config

    async def get_config(self, app: str) -> dict[str, str]:
        self._call("get_config", app)
        self._app(app)
        return dict(self.configs[app])

    async def update_config(self, app: str, changes: dict[str, str | None]) -> dict[str, str]:
        self._call("update_config", app, changes)
        self._app(app)
        change = rules.config_change(self.configs[app], changes)
        if change is None:  # nothing changes: no release
            return dict(self.configs[app])
        current = self.releases[app][-1] if self.releases[app] else None
        self._release(app, current["slug"]["id"] if current and current["slug"] else None, change.description,
                      current["process_types"] if current else {}, change.config)
        return dict(change.config)

    # slugs and releases

    async def upload_slug(self, app: str, chunks: AsyncIterator[bytes]) -> Json:
        self._call("upload_slug", app)
        self._app(app)
        data = b"".join([chunk async for chunk in chunks])
        if not data.startswith(b"\x1f\x8b"):
            raise UserError("The slug is not a gzip tarball: pack it with `dynoctl deploy`.")
        slug_id = hashlib.sha256(data).hexdigest()
        self.slugs[slug_id] = data
        return {"id": slug_id, "size": len(data), "process_types": dict(self.slug_process_types)}

    async def list_releases(self, app: str) -> list[Json]:
        self._call("list_releases", app)
        self._app(app)
        return list(self.releases[app])

    async def get_release(self, app: str, version: int | None) -> Json:
        self._call("get_release", app, version)
        self._app(app)
        releases = self.releases[app]
        if version is None:
            if not releases:
                raise NotFound(f"{app} has no releases yet: deploy it first.")
            return releases[-1]
        if not 1 <= version <= len(releases):
            raise NotFound(f"{app} has no release v{version}.")
        return releases[version - 1]

    async def create_release(self, app: str, slug_id: str, description: str | None) -> Json:
        self._call("create_release", app, slug_id, description)
        self._app(app)
        if slug_id not in self.slugs:
            raise NotFound(f"No slug {slug_id[:12]} on this host: upload it first.")
        return self._release(app, slug_id, description or rules.slug_release_description(slug_id),
                             self.slug_process_types)

    async def rollback(self, app: str, version: int | None) -> Json:
        self._call("rollback", app, version)
        self._app(app)
        releases = self.releases[app]
        if not releases:
            raise NotFound(f"{app} has no releases to roll back.")
        target_version = rules.rollback_version(app, len(releases), version)
        if target_version > len(releases):
            raise NotFound(f"{app} has no release v{target_version}: see `dynoctl releases -a {app}`.")
        target = releases[target_version - 1]
        config = rules.rollback_config(self._as_release(app, target_version), self._as_release(app, len(releases)))
        slug = target["slug"]["id"] if target["slug"] else None
        return self._release(app, slug, rules.rollback_description(target_version), target["process_types"],
                             config)

    def _as_release(self, app: str, version: int) -> Release:
        shown = self.releases[app][version - 1]
        return Release(app=app, version=version, slug_id=shown["slug"]["id"] if shown["slug"] else None,
                       config=self.release_configs[app][version - 1], description=shown["description"],
                       created_at=0.0, process_types=shown["process_types"])

    # formation and dynos

    async def get_formation(self, app: str) -> list[Json]:
        self._call("get_formation", app)
        self._app(app)
        return [self.formations[app][t] for t in sorted(self.formations[app])]

    async def update_formation(self, app: str, updates: list[Json]) -> list[Json]:
        self._call("update_formation", app, updates)
        self._app(app)
        formation = self.formations[app]
        # The fake's formation rows carry their commands: its process types are the rows' types.
        rows = [Formation(app=app, type=t, quantity=entry["quantity"], size=entry["size"])
                for t, entry in formation.items()]
        checked = rules.formation_changes(app, updates, {t: entry["command"] for t, entry in formation.items()}, rows)
        for type_, quantity, size in checked:
            entry = formation[type_]
            if quantity is not None:
                entry["quantity"] = quantity
            if size is not None:
                entry["size"] = size
        return [formation[t] for t in sorted(formation)]

    async def list_dynos(self, app: str) -> list[Json]:
        self._call("list_dynos", app)
        self._app(app)
        return list(self.dynos[app])

    async def restart_dynos(self, app: str, target: str | None) -> None:
        self._call("restart_dynos", app, target)
        self._app(app)

    async def stop_dyno(self, app: str, target: str) -> None:
        self._call("stop_dyno", app, target)
        self._app(app)
        if not any(d["name"] == target or d["type"] == target for d in self.dynos[app]):
            raise NotFound(f"No dyno or process type {target} in {app}.")

    async def run_detached(self, app: str, command: str, size: str | None, env: dict[str, str]) -> Json:
        self._call("run_detached", app, command, size, env)
        self._app(app)
        self._run_number += 1
        dyno = {"name": f"run.{self._run_number}", "type": "run", "state": "starting",
                "size": dyno_size(size or "standard-1X").name, "command": command,
                "release": {"version": len(self.releases[app])}, "created_at": NOW, "updated_at": NOW}
        self.dynos[app].append(dyno)
        return dyno

    async def run_attached(self, app: str, command: str, size: str | None, env: dict[str, str],
                           tty: bool, rows: int, cols: int) -> FakeAttachedDyno:
        self._call("run_attached", app, command, size, env, tty, rows, cols)
        self._app(app)
        if size is not None:
            dyno_size(size)
        self._run_number += 1
        dyno = FakeAttachedDyno(f"run.{self._run_number}", command, tty, rows, cols)
        self.attached.append(dyno)
        return dyno

    # logs

    async def log_lines(self, app: str, lines: int, ps: str | None, source: str | None) -> list[str]:
        self._call("log_lines", app, lines, ps, source)
        self._app(app)
        return [line for line in self.logs.get(app, []) if ps is None or f"[{ps}" in line][-lines:]

    async def tail_logs(self, app: str, lines: int, ps: str | None, source: str | None
                        ) -> AsyncIterator[list[str]]:
        self._call("tail_logs", app, lines, ps, source)
        self._app(app)
        send, receive = trio.open_memory_channel[str](math.inf)
        self._log_listeners.setdefault(app, []).append(send)
        try:
            backlog = self.logs.get(app, [])[-lines:]
            if backlog:
                yield backlog
            async for line in receive:
                yield [line]
        finally:
            if send in self._log_listeners.get(app, []):
                self._log_listeners[app].remove(send)

    async def list_drains(self, app: str) -> list[Json]:
        self._call("list_drains", app)
        self._app(app)
        return list(self.drains.get(app, []))

    async def add_drain(self, app: str, url: str) -> Json:
        self._call("add_drain", app, url)
        self._app(app)
        if not url.startswith(("syslog://", "syslog+tls://", "https://")):
            raise UserError(f"Unsupported drain URL {url}: use syslog://, syslog+tls:// or https://.")
        drain = {"id": f"d{self._next_id}", "url": url, "token": f"d.{self._next_id:08x}"}
        self._next_id += 1
        self.drains.setdefault(app, []).append(drain)
        return drain

    async def remove_drain(self, app: str, url_or_id: str) -> None:
        self._call("remove_drain", app, url_or_id)
        drains = self.drains.get(app, [])
        for drain in drains:
            if url_or_id in (drain["url"], drain["id"]):
                drains.remove(drain)
                return
        raise NotFound(f"No drain {url_or_id} on {app}.")

    # routing

    async def list_domains(self, app: str) -> list[Json]:
        self._call("list_domains", app)
        self._app(app)
        return [{"hostname": f"{app}.localhost", "kind": "heroku"}] + list(self.domains.get(app, []))

    async def add_domain(self, app: str, hostname: str) -> Json:
        self._call("add_domain", app, hostname)
        self._app(app)
        domain = {"hostname": hostname, "kind": "custom"}
        self.domains.setdefault(app, []).append(domain)
        return domain

    async def remove_domain(self, app: str, hostname: str) -> None:
        self._call("remove_domain", app, hostname)
        domains = self.domains.get(app, [])
        for domain in domains:
            if domain["hostname"] == hostname:
                domains.remove(domain)
                return
        raise NotFound(f"No custom domain {hostname} on {app}.")

    async def list_certs(self, app: str) -> list[Json]:
        self._call("list_certs", app)
        self._app(app)
        return list(self.certs.get(app, []))

    async def add_cert(self, app: str, domain: str, cert_pem: str, key_pem: str) -> Json:
        self._call("add_cert", app, domain, cert_pem, key_pem)
        self._app(app)
        if "BEGIN CERTIFICATE" not in cert_pem:
            raise UserError("The certificate is not PEM: give the file that starts with -----BEGIN CERTIFICATE-----.")
        cert = {"domain": domain, "not_after": "2027-11-26T12:00:00Z", "self_signed": True}
        self.certs.setdefault(app, []).append(cert)
        return cert

    # stacks and the daemon

    async def list_stacks(self) -> list[Json]:
        self._call("list_stacks")
        return list(self.stacks)

    async def build_stack(self, name: str | None, progress: Callable[[str], None]) -> Json:
        self._call("build_stack", name)
        stack = next((s for s in self.stacks if s["name"] == name), None)
        if stack is None:
            raise NotFound(f"No stack definition {name}: see rootfs/ for the stacks there are.")
        for step in ("debootstrap: minbase", "installing python3", "sealing"):
            progress(step)
            await trio.sleep(0)
        stack.update(built=True, size_bytes=175_000_000)
        return stack

    async def status(self) -> Json:
        self._call("status")
        return {"version": "0.1.0", "pid": 4242, "apps": len(self.apps),
                "dynos": sum(len(d) for d in self.dynos.values())}

    async def shutdown(self, stop_dynos: bool) -> None:
        self._call("shutdown", stop_dynos)
        self.shutdowns.append(stop_dynos)
