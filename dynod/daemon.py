"""`dynod`: the control plane, one trio process.

Start-up order: settings, state dirs, ledger, log stream, stack and slug stores, cgroups, network,
the spawner (found running, or started in its own session), the dyno manager (which re-adopts
every dyno the spawner still has), the router (likewise found or started), and last the API.
SIGTERM or SIGINT ends dynod and nothing else: dynos, the spawner and the router keep running,
and the next dynod takes them over. ``POST /shutdown {"stop_dynos": true}`` (``dynoctl
system:shutdown``) is the one way to stop everything, for uninstalls and tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .errors import UserError
from .settings import Settings, load_settings

log = logging.getLogger("dynod")


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._router: Any = None
        self._shutdown = trio.Event()
        self._stop_dynos = False
        self._routes_dirty = trio.Event()
        self._routes_wanted = 0  # generation of the route table asked for
        self._routes_pushed = 0  # generation the router has been sent
        self._routes_pushed_event = trio.Event()

    def request_shutdown(self, stop_dynos: bool) -> None:
        self._stop_dynos = self._stop_dynos or stop_dynos
        self._shutdown.set()

    def routes_changed(self) -> None:
        self._routes_wanted += 1
        self._routes_dirty.set()

    async def routes_flushed(self) -> None:
        """Wait until the router has the routes as of now (a dyno about to stop is out of them)."""
        if self._router is None:
            return
        wanted = self._routes_wanted
        with trio.move_on_after(2):  # a stuck router must not hold up stopping dynos
            while self._routes_pushed < wanted:
                await self._routes_pushed_event.wait()
            # The router's parent has them; its workers apply them in order with what they read, so
            # once every worker has answered a stats request none routes to the dyno that left (on a
            # busy host a worker can lag: requests sent after SIGTERM wait in the dyno's backlog and
            # end as H12s).
            try:
                await self._router.statistics()
            except (UserError, EOFError, OSError) as exc:
                log.debug("route barrier: %s", exc)

    async def run(self) -> None:
        from .api.server import serve_api
        from .builds.slug_store import SlugStore
        from .ledger.guard import open_ledger_of, secure_state_dir
        from .linux.cgroups import detect, host_pid_max, subtree_pids_max
        from .linux.firewall import Firewall, FirewallSpec
        from .linux.net import Network
        from .linux.spawner_client import SpawnerClient
        from .logplex import LogStream
        from .logplex.egress import DrainEgress
        from .manager.dynos import DynoManager
        from .platform import Platform
        from .stack import StackStore

        s = self.settings
        secure_state_dir(s.state_dir)  # 0700 before anything is written in it (ledger/guard.py)
        for directory in (s.logs_dir, s.slugs_dir, s.stacks_dir):
            directory.mkdir(parents=True, exist_ok=True)
        s.run_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._lock = _take_lock(s.run_dir / "dynod.lock")  # before the spawner: one dynod per run_dir
        # A ledger lost while apps' data remain is refused (one line, exit 1): no dyno is touched.
        ledger = open_ledger_of(s.state_dir, s.ledger_url)
        ca_file = s.logs.drain_ca_file
        logs = LogStream(s.logs_dir, lines=s.logs.lines,
                         ssl_context=lambda: ssl.create_default_context(cafile=ca_file),
                         drain_egress=DrainEgress.for_host(allow_local=s.logs.allow_local_drains,
                                                           dyno_subnets=[s.network.subnet,
                                                                         s.network.build_subnet]))
        from .metrics import Metrics  # Heroku Metrics, from the lines the log stream publishes

        metrics = Metrics(s.state_dir / "metrics.sqlite3", minute_retention=s.metrics.minute_retention,
                          coarse_retention=s.metrics.coarse_retention)
        logs.observers.append(metrics.observe_messages)
        slugs = SlugStore(s.slugs_dir)
        stacks = StackStore(s.stacks_dir, default=s.stack, uid=s.dynos.uid, gid=s.dynos.gid)
        cgroups = detect(parent=s.cgroups.parent, name=s.cgroups.name)
        cgroups.bound_subtree_pids(subtree_pids_max(s.dynos.pids_total, host_pid_max()))  # all dynos together
        network = Network(s.network.bridge, s.network.subnet)
        build_network = Network(s.network.build_bridge_name, s.network.build_subnet)
        firewall = Firewall(FirewallSpec((s.network.bridge, s.network.build_bridge_name),
                                         (s.network.subnet, s.network.build_subnet)))
        await trio.to_thread.run_sync(firewall.apply)  # before any dyno or build sends a packet
        spawner = await SpawnerClient.connect_or_start(s.spawner_socket, s.run_dir / "spawner.log")
        manager = DynoManager(s, ledger=ledger, spawner=spawner, cgroups=cgroups, network=network, logs=logs,
                              slugs=slugs, stacks=stacks, on_routes_changed=self.routes_changed,
                              routes_flushed=self.routes_flushed, build_network=build_network)
        platform = Platform(s, ledger=ledger, manager=manager, logs=logs, slugs=slugs, stacks=stacks,
                            routes_changed=self.routes_changed, request_shutdown=self.request_shutdown)
        platform.metrics, platform.prometheus = metrics, s.metrics.prometheus
        from .addons import Addons  # the add-on servers: their own cgroup subtree, apart from the dynos'

        addon_cgroups = detect(parent=s.cgroups.parent, name=f"{s.cgroups.name}-addons")
        addons = platform.addons = Addons(s, ledger=ledger, logs=logs, manager=manager, firewall=firewall,
                                          cgroups=addon_cgroups, released=platform.addon_released)
        manager.address_claimed, manager.address_released = addons.address_claimed, addons.address_released
        router = None
        self._router = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals)
                nursery.start_soon(spawner.run)
                await nursery.start(logs.run)
                await nursery.start(metrics.run)
                await nursery.start(manager.run)
                await nursery.start(addons.run)  # after the manager's adoption: the live dynos are known
                nursery.start_soon(self._supervise_spawner, manager, nursery)
                await self._start_scheduling(platform, logs, nursery)
                if s.router.enabled:
                    router = self._router = await self._start_router()
                    nursery.start_soon(self._feed_router, router, platform)
                    router.on_wake = manager.wake_app  # a request held for a sleeping eco app
                    nursery.start_soon(self._router_logs, router, logs, manager)
                    from .acm.manager import CertManager  # ACM answers its challenges through the router

                    platform.acm = CertManager(s, ledger=ledger, logs=logs, routes_changed=self.routes_changed,
                                               routes_flushed=self.routes_flushed)
                    nursery.start_soon(platform.acm.run)
                api_routes = self._api_routes(platform)
                # The TCP listeners before the socket: whoever waits for the socket to answer (an
                # embedding program, the tests, systemd's readiness) may then use every one.
                if s.api.listen:
                    await self._serve_api_tls(platform, nursery)
                if s.dashboard.listen:
                    await self._serve_dashboard(platform, nursery)
                await nursery.start(partial(serve_api, platform, s.api_socket, group=s.api_group,
                                            routes=api_routes))
                log.info("dynod ready: API at %s, %s cgroups, dyno subnet %s", s.api_socket, cgroups.kind,
                         s.network.subnet)
                print(f"dynod ready: API at {s.api_socket}", file=sys.stderr, flush=True)
                await self._shutdown.wait()
                if self._stop_dynos:
                    await manager.stop_all()
                    await addons.stop_servers()  # their data stays in the state dir
                    await manager.spawner.shutdown(force=True)  # the one running now
                    if router is not None:
                        await router.stop_router()
                    await network.teardown()
                    await build_network.teardown()
                    await trio.to_thread.run_sync(firewall.remove)  # dynod stops for good
                    await trio.to_thread.run_sync(cgroups.remove_subtree)
                    await trio.to_thread.run_sync(addon_cgroups.remove_subtree)
                nursery.cancel_scope.cancel()
        finally:
            if self._stop_dynos:
                for path in (s.api_socket, s.spawner_socket):
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
            network.close()
            build_network.close()
            ledger.close()

    async def _start_scheduling(self, platform: Any, logs: Any, nursery: trio.Nursery) -> None:
        """Heroku Scheduler's jobs and web autoscaling, each in a small store of its own
        (docs/scheduler.md, docs/autoscaling.md); after the manager's adoption, so a run never
        races the dynos being taken over."""
        from .api.routes import MAX_QUANTITY
        from .autoscale import Autoscaler, AutoscaleStore, Damping, ResponseWindows
        from .scheduler import ScheduleClock, Scheduler, SchedulerStore

        s = self.settings
        platform.scheduler = Scheduler(
            SchedulerStore(s.state_dir / "scheduler.sqlite3"), start_dyno=platform.run_scheduled,
            emit=lambda app, message: logs.emit(app, "dynod", "scheduler", message),
            clock=ScheduleClock(rate=s.scheduler.clock_rate), stop_dyno=platform.stop_dyno)
        await nursery.start(platform.scheduler.run)
        a = s.autoscale
        windows = ResponseWindows(a.window)
        logs.observers.append(windows.observe_messages)

        async def scale(app: str, type: str, quantity: int) -> object:
            return await platform.update_formation(app, [{"type": type, "quantity": quantity}], by="autoscaling")

        platform.autoscaler = Autoscaler(
            AutoscaleStore(s.state_dir / "autoscale.sqlite3"), windows=windows,
            damping=Damping(up_windows=a.up_windows, down_windows=a.down_windows, down_ratio=a.down_ratio,
                            cooldown=a.cooldown),
            formation=platform.get_formation, scale=scale,
            emit=lambda app, message: logs.emit(app, "dynod", "autoscale", message), limit=MAX_QUANTITY)
        await nursery.start(platform.autoscaler.run)

    def _api_routes(self, platform: Any) -> Any:
        """The socket's routes: dynod's own plus users, tokens and collaborators (docs/api.md)."""
        from .accounts import AccountStore
        from .api.platform_api import PlatformApi

        platform.accounts = AccountStore(self.settings.state_dir / "accounts.sqlite3")
        return PlatformApi(platform, platform.accounts, remote=False)

    async def _serve_api_tls(self, platform: Any, nursery: trio.Nursery) -> None:
        """The Platform API on TCP with TLS, every request behind an API token (docs/api.md)."""
        import ipaddress
        import socket

        from .api.platform_api import PlatformApi
        from .api.server import serve_api_tls
        from .api.tls import ensure_api_cert, parse_api_listen, server_context

        a = self.settings.api
        host, port = parse_api_listen(a.listen)
        hostname = a.hostname or socket.gethostname()
        pem = Path(a.cert) if a.cert else await trio.to_thread.run_sync(
            ensure_api_cert, self.settings.state_dir / "api", hostname, host)
        context = server_context(pem)
        routes = PlatformApi(platform, platform.accounts, remote=True, rate_limit=a.rate_limit)
        bound_host, bound_port = await nursery.start(partial(
            serve_api_tls, routes, host, port, context, max_connections=a.max_connections,
            idle_timeout=a.idle_timeout))
        shown = hostname if ipaddress.ip_address(bound_host).is_unspecified else (
            f"[{bound_host}]" if ":" in bound_host else bound_host)
        routes.public_url = platform.api_url = f"https://{shown}:{bound_port}"
        platform.api_cert = pem
        from .api.tls import certificate_fingerprint

        print(f"dynod API on {platform.api_url} (certificate SHA256 {certificate_fingerprint(pem)})",
              file=sys.stderr, flush=True)

    async def _serve_dashboard(self, platform: Any, nursery: trio.Nursery) -> None:
        """The API again on loopback TCP for a browser, behind a token (docs/dashboard.md)."""
        from .api.routes import ApiRoutes
        from .api.server import serve_api_tcp
        from .dashboard.listener import DashboardRoutes, load_token, parse_listen

        host, port = parse_listen(self.settings.dashboard.listen)
        token = load_token(self.settings.state_dir)
        routes = DashboardRoutes(ApiRoutes(platform), token, host, port)
        try:
            bound_host, bound_port = await nursery.start(serve_api_tcp, routes, host, port)
        except OSError as exc:
            raise UserError(f"[dashboard] listen {self.settings.dashboard.listen}: {exc.strerror or exc}; pick a "
                            "free port or turn the dashboard's listener off.") from None
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        platform.dashboard_url = f"http://{shown}:{bound_port}/#token={token}"

    async def _start_router(self) -> Any:
        from .router.control import RouterControl

        s = self.settings
        argv = [sys.executable, "-m", "dynod.router", "--control", str(s.run_dir / "router.sock"),
                "--base-domain", s.router.base_domain, "--workers", str(s.router.workers),
                "--state-dir", str(s.state_dir / "router")]
        for address in s.router.http:
            argv += ["--http", address]
        for address in s.router.https:
            argv += ["--https", address]
        return await RouterControl.connect_or_start(control_path=s.run_dir / "router.sock", argv=argv)

    async def _feed_router(self, router: Any, platform: Any) -> None:
        """Push the route table whenever it changes; coalesce bursts into one snapshot."""
        pushed_certs = None
        while True:
            generation = self._routes_wanted
            await router.push_routes(platform.route_table())
            self._routes_pushed = generation
            self._routes_pushed_event.set()
            self._routes_pushed_event = trio.Event()
            certs = platform.certificates()
            if certs != pushed_certs:
                await router.push_certs(certs)
                pushed_certs = certs
            await self._routes_dirty.wait()
            self._routes_dirty = trio.Event()
            await trio.sleep(0.005)

    async def _router_logs(self, router: Any, logs: Any, manager: Any) -> None:
        async for app, line in router.receive_logs():
            if not app:  # the router's own word (a refused snapshot keeps its old routes): say it here
                log.warning("%s", line)
            logs.emit(app, "dynod", "router", line)
            if app:
                manager.request_seen(app)  # one line per request: the router's view of idle apps

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal %s: dynod exits; dynos keep running", signum)
                self.request_shutdown(False)

    async def _supervise_spawner(self, manager: Any, nursery: trio.Nursery) -> None:
        """A spawner that dies (kill -9, a bug) is replaced; the manager re-adopts what still runs."""
        from .linux.spawner_client import SpawnerClient, SpawnerError

        s = self.settings
        failures = 0  # in a row: a spawner that cannot stay up is not retried forever
        while True:
            await manager.spawner.closed.wait()
            if self._shutdown.is_set():
                return
            log.error("the spawner went away; starting a new one (the dynos that still run are re-adopted)")
            try:
                spawner = await SpawnerClient.connect_or_start(s.spawner_socket, s.run_dir / "spawner.log")
                nursery.start_soon(spawner.run)
                await manager.spawner_replaced(spawner)
                failures = 0
            except SpawnerError as exc:
                failures += 1
                if failures >= 5:
                    log.error("no spawner stays up (%s; see %s): dynod exits so that it can be restarted "
                              "cleanly", exc, s.run_dir / "spawner.log")
                    self.request_shutdown(False)
                    return
                await trio.sleep(failures)


def _take_lock(path: Path) -> Any:
    """Hold an exclusive lock for this dynod's life; a second dynod on the same run_dir stops here.

    Without it the second would connect to the spawner, which serves the newest connection, and
    take the dynos away from the running one.
    """
    import fcntl

    handle = open(path, "a")  # noqa: SIM115 - held open (and locked) until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"Another dynod is running with run_dir {path.parent}: stop it first "
                        "(dynoctl system:shutdown), or give this one another run_dir.") from None
    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynod", description="The dynod control plane (runs as root).")
    parser.add_argument("--config", type=Path, help="settings file (default /etc/dynod/dynod.toml)")
    parser.add_argument("--state-dir", type=Path, help="where the ledger, slugs and stacks live")
    parser.add_argument("--run-dir", type=Path, help="where the sockets live")
    parser.add_argument("--log-level", default=os.environ.get("DYNOD_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        overrides: dict[str, Any] = {}
        if args.state_dir:
            overrides["state_dir"] = args.state_dir
        if args.run_dir:
            overrides["run_dir"] = args.run_dir
        settings = load_settings(args.config, **overrides)
        if os.geteuid() != 0:
            raise UserError("dynod must run as root (it makes namespaces, mounts and cgroups): use sudo.")
        trio.run(Daemon(settings).run)
    except KeyboardInterrupt:
        return 130
    except (UserError, BaseExceptionGroup) as exc:
        # Raised in the daemon's nursery a UserError comes wrapped in a group: show the sentence.
        error = _first_user_error(exc)
        if error is None:
            raise
        print(f"dynod: {error}", file=sys.stderr)
        return 1
    return 0


def _first_user_error(exc: BaseException) -> UserError | None:
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_user_error(inner)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
