"""dynod.toml -> frozen dataclasses. Every knob has a default, so dynod runs with no file at all."""

from __future__ import annotations

import ipaddress
import os
import tomllib  # Python >= 3.11 (Debian 12's) has it: the design card's tomli is not needed
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UserError

DEFAULT_CONFIG_PATH = Path("/etc/dynod/dynod.toml")


@dataclass(frozen=True)
class DynoSettings:
    uid: int = 61000  # the stack's "dyno" user: owns slugs and build dirs on disk
    gid: int = 61000
    # Each app's processes run as a uid (and group) of its own from [uid_first, uid_first +
    # uid_count), assigned by the ledger: per-uid kernel state (the keyring, inotify, pipe pages,
    # mqueues) is then the app's alone. Idmapped mounts show each dyno its slug as its own
    # (docs/dynos.md). The default is clear of Debian's user, system, DynamicUser, subuid and
    # systemd-nspawn ranges, so no host process ever shares a uid with a dyno.
    uid_first: int = 2_000_000_000
    uid_count: int = 65536
    port: int = 5000  # $PORT inside each dyno (every dyno has its own address)
    stop_timeout: float = 30.0  # SIGTERM, then SIGKILL after this many seconds (Heroku: 30 s)
    boot_timeout: float = 60.0  # R10: a web dyno must accept on $PORT within this
    hard_limit_ratio: float = 2.0  # hard memory limit = quota * ratio (Heroku kills at 2x: R15)
    # A scale is refused when the formations of all apps would ask for more memory (the sizes'
    # quotas) than this many times the host's RAM. Idle dynos use far less than their quota, so
    # some overcommit is the point; 2.0 on a 24 GiB host: 96 standard-1X or 3 performance-L.
    memory_overcommit: float = 2.0
    tmpfs_size_mb: int = 1024  # the ephemeral filesystem (overlay upper) of each dyno
    # Dynos forked, moved into a cgroup and wired ahead of need, so that a start skips those
    # steps (fork, the cgroup v1 moves, the veth). On by default: starts were 0.77-0.96x the
    # cold ones' medians in the same runs (docs/dynos.md, "The warm pool"), for ~1.4 MiB of
    # private memory, one waiting process and its network namespace per warm dyno. Its known
    # fault (a request hanging after a kill -9 of dynod) was the bridge's changing MAC, fixed.
    # cgroup2 hosts keep no pool whatever this says (no rename there). 0 turns it off.
    warm_pool: int = 2
    restart_cooloff_max: float = 1200.0  # Heroku's longest cool-off between crash restarts (20 min)
    restart_cooloff_base: float = 20.0
    cycle_hours: float = 24.0  # daily cycling: 24 h plus a random 0-216 min per dyno
    cycle_jitter_minutes: float = 216.0
    # Eco apps sleep after this long without a request to their web dynos (Heroku: 30 minutes).
    eco_idle_minutes: float = 30.0
    # Apps whose dynos and builds run without the default seccomp profile (docs/dynos.md lists
    # what it denies): for an app that truly needs, say, io_uring or user namespaces. Each one
    # listed gives up a layer of isolation from the other apps on this host.
    seccomp_unconfined_apps: list[str] = field(default_factory=list)
    # Processes and threads: a dyno's limit is its size's (Heroku's: 256 for standard-1X), capped
    # here, since performance-L's 32768 is the whole of a default kernel.pid_max. All dynos (and
    # builds) together are held by dynod's own cgroup subtree to pids_total; 0 means half of the
    # host's kernel.pid_max, leaving the rest to the host (docs/dynos.md, "Processes").
    pids_max: int = 8192
    pids_total: int = 0


@dataclass(frozen=True)
class NetworkSettings:
    subnet: str = "198.18.0.0/16"  # benchmarking range (RFC 2544), never a site's private range
    bridge: str = "dynod0"
    # Build containers get a network namespace of their own on this subnet and a bridge of its
    # own (default: the dyno bridge's name + "b"), with egress through NAT and nothing else.
    build_subnet: str = "198.19.255.0/24"
    build_bridge: str = ""

    @property
    def build_bridge_name(self) -> str:
        return self.build_bridge or (self.bridge + "b")[:15]


@dataclass(frozen=True)
class CgroupSettings:
    # None: beneath the cgroup dynod was started in (systemd Delegate=). Else a path relative to
    # each hierarchy's root, e.g. "system.slice/dynod.service".
    parent: str | None = None
    name: str = "dynod"  # the subtree dynod makes and owns; nothing outside it is touched


@dataclass(frozen=True)
class RouterSettings:
    enabled: bool = True
    http: list[str] = field(default_factory=lambda: ["0.0.0.0:80"])
    https: list[str] = field(default_factory=lambda: ["0.0.0.0:443"])
    base_domain: str = "localhost"
    workers: int = 2


@dataclass(frozen=True)
class BuildSettings:
    timeout: float = 900.0  # Heroku's 15-minute compile limit
    slug_limit_mb: int = 1024  # Heroku's 1 GB slug limit (a warning above 300 MB)
    # Host directories a .buildpacks file or BUILDPACK_URL may name as local buildpacks.
    local_buildpack_roots: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LogSettings:
    lines: int = 1500  # Heroku keeps the last 1,500 lines per app
    metrics_interval: float = 20.0  # 0 turns runtime metrics off
    # CA bundle that syslog+tls:// and https:// drains are checked against (default: the system's).
    drain_ca_file: str | None = None
    # Drains to loopback, link-local and this host's own addresses are refused (a drain URL would
    # otherwise reach services that trust the host); the dyno and build subnets are refused always.
    allow_local_drains: bool = False


@dataclass(frozen=True)
class AcmSettings:
    """Automated Certificate Management (Heroku's ACM): certificates for custom domains over ACME."""

    directory_url: str = "https://acme-v02.api.letsencrypt.org/directory"  # Let's Encrypt
    email: str | None = None  # the CA's contact for expiry and policy notices
    ca_file: str | None = None  # CA bundle the ACME server's HTTPS is checked against (default: the system's)
    renew_before_days: float = 30.0  # renew this long before expiry (half the lifetime if shorter)
    retry_base: float = 600.0  # first retry after a failure; doubles per failure ...
    retry_max: float = 86400.0  # ... up to a day
    rate_limit_pause: float = 3600.0  # at least this long without orders after the CA says rateLimited
    request_timeout: float = 30.0  # each HTTP request to the ACME server
    order_timeout: float = 120.0  # a whole order: challenge, validation, finalization


@dataclass(frozen=True)
class MetricsSettings:
    """Heroku Metrics: per app and process type, in state_dir/metrics.sqlite3 (docs/metrics.md)."""

    minute_retention: float = 86400.0  # one-minute points kept 24 h ...
    coarse_retention: float = 7 * 86400.0  # ... and ten-minute points 7 days
    # GET /metrics (Prometheus/OpenMetrics text) on the API's listeners: off unless asked for.
    prometheus: bool = False


@dataclass(frozen=True)
class SchedulerSettings:
    """Heroku Scheduler's jobs (docs/scheduler.md)."""

    # For tests only: the schedule's clock runs this many times faster than wall time, so a
    # `* * * * *` job fires every 60/clock_rate s with every other rule unchanged. Keep it 1.
    clock_rate: float = 1.0


@dataclass(frozen=True)
class AutoscaleSettings:
    """Autoscaling web dynos on the router's p95 response time (docs/autoscaling.md)."""

    window: float = 60.0  # seconds per measured p95 (Heroku's one-minute figures)
    up_windows: int = 3  # windows in a row over the goal before a step up
    down_windows: int = 5  # windows in a row well under it before a step down
    down_ratio: float = 0.5  # "well under": p95 below this fraction of the goal
    cooldown: float = 300.0  # seconds after a change (or a refused one) before the next


@dataclass(frozen=True)
class DashboardSettings:
    """The web dashboard. It is always on the API socket; a browser needs TCP, which is off unless
    ``listen`` names a loopback address (e.g. "127.0.0.1:5080"); it then asks for the token in
    state_dir/dashboard.token (docs/dashboard.md)."""

    listen: str = ""


@dataclass(frozen=True)
class LedgerSettings:
    # None: the embedded SQLite file in the state dir. "postgresql://user@host/db" selects
    # PostgreSQL, the store several hosts will share (docs/ledger.md).
    url: str | None = None


@dataclass(frozen=True)
class AddonSettings:
    # Each built-in add-on's server listens on the dyno bridge's address on a port of this range
    # (docs/addons.md); dynos of attached apps are let through to it, nothing else is.
    port_first: int = 45000
    port_count: int = 1000
    # addons:destroy takes a final backup first (unless --no-final-backup); kept this long.
    final_backup_days: float = 7.0
    # Services speaking Heroku's Add-on Partner API ([[addons.partners]] tables; docs/addons.md).
    partners: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ApiSettings:
    """The Platform API over TCP with TLS, for clients on other machines (docs/api.md).

    Off unless ``listen`` names an address ("0.0.0.0:5443", "127.0.0.1:5443"): every request there
    needs an API token. ``cert`` is a PEM file with the certificate and its key; without one dynod
    makes a self-signed certificate for ``hostname`` (state_dir/api/). ``fetch_loopback`` lets a
    build's source_blob URL point at this host's loopback (tests serve archives there); off, since
    loopback services of the host are none of a user's business."""

    listen: str = ""
    cert: str = ""
    hostname: str = ""  # the name clients use for this host; default: the host's name
    rate_limit: int = 4500  # requests per user per hour (Heroku's pool)
    fetch_loopback: bool = False
    max_connections: int = 256  # at once; past it a new connection is closed at once
    idle_timeout: float = 60.0  # seconds a client may send nothing of a request it started


@dataclass(frozen=True)
class Settings:
    state_dir: Path = Path("/var/lib/dynod")
    run_dir: Path = Path("/run/dynod")
    api_group: str = "dynod"  # members may open the API socket; otherwise root only
    stack: str = "debian-13"  # the stack definition under rootfs/ that dynos use
    # Built stacks are large and slow to make: tests share one cache between many state dirs.
    stacks_path: Path | None = None
    dynos: DynoSettings = field(default_factory=DynoSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    cgroups: CgroupSettings = field(default_factory=CgroupSettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    logs: LogSettings = field(default_factory=LogSettings)
    builds: BuildSettings = field(default_factory=BuildSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    addons: AddonSettings = field(default_factory=AddonSettings)
    acm: AcmSettings = field(default_factory=AcmSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    autoscale: AutoscaleSettings = field(default_factory=AutoscaleSettings)
    api: ApiSettings = field(default_factory=ApiSettings)

    @property
    def api_socket(self) -> Path:
        return self.run_dir / "api.sock"

    @property
    def spawner_socket(self) -> Path:
        return self.run_dir / "spawner.sock"

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "dynod.sqlite3"

    @property
    def ledger_url(self) -> str:
        """What ``open_ledger`` opens: [ledger] url, else the SQLite file in the state dir."""
        return self.ledger.url or str(self.ledger_path)

    @property
    def stacks_dir(self) -> Path:
        return self.stacks_path or self.state_dir / "stacks"

    @property
    def slugs_dir(self) -> Path:
        return self.state_dir / "slugs"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


_SECTIONS = {"dynos": DynoSettings, "network": NetworkSettings, "cgroups": CgroupSettings,
             "router": RouterSettings, "logs": LogSettings, "builds": BuildSettings,
             "ledger": LedgerSettings, "addons": AddonSettings, "acm": AcmSettings, "metrics": MetricsSettings,
             "dashboard": DashboardSettings, "api": ApiSettings,
             "scheduler": SchedulerSettings, "autoscale": AutoscaleSettings}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(known))}.")
        if key in _SECTIONS and isinstance(value, dict):
            kwargs[key] = _build(_SECTIONS[key], value, f"{where} [{key}]")
        elif key in ("state_dir", "run_dir", "stacks_path"):
            kwargs[key] = Path(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def validate(settings: Settings) -> Settings:
    try:
        net = ipaddress.ip_network(settings.network.subnet)
    except ValueError as exc:
        raise UserError(f"[network] subnet {settings.network.subnet!r} is not a network: {exc}.") from None
    if net.version != 4 or net.num_addresses < 8:
        raise UserError(f"[network] subnet {net} must be IPv4 with room for dynos (at most /29).")
    try:
        build_net = ipaddress.ip_network(settings.network.build_subnet)
    except ValueError as exc:
        raise UserError(f"[network] build_subnet {settings.network.build_subnet!r} is not a network: {exc}.") from None
    if build_net.version != 4 or build_net.num_addresses < 8 or build_net.overlaps(net):
        raise UserError(f"[network] build_subnet {build_net} must be IPv4, at most /29, and apart from "
                        f"the dyno subnet {net}.")
    if settings.network.build_bridge_name == settings.network.bridge:
        raise UserError("[network] build_bridge must differ from bridge.")
    if settings.dynos.memory_overcommit <= 0:
        raise UserError("[dynos] memory_overcommit must be positive (1.0: no more than the host's RAM).")
    d = settings.dynos
    if d.uid_first < 1 or d.uid_count < 1 or d.uid_first + d.uid_count > 4_294_967_294:
        raise UserError("[dynos] uid_first and uid_count must give a range of uids above 0 and below 4294967294.")
    if d.uid_first <= d.uid < d.uid_first + d.uid_count:
        raise UserError(f"[dynos] uid {d.uid} (the stack's dyno user) must lie outside uid_first..uid_first+uid_count: "
                        "every app's uid must differ from it.")
    if isinstance(d.pids_max, bool) or not isinstance(d.pids_max, int) or d.pids_max < 16 \
            or isinstance(d.pids_total, bool) or not isinstance(d.pids_total, int) or d.pids_total < 0:
        raise UserError("[dynos] pids_max must be a whole number of at least 16 processes, pids_total 0 "
                        "(half of kernel.pid_max) or a whole number.")
    if isinstance(d.eco_idle_minutes, bool) or not isinstance(d.eco_idle_minutes, int | float) \
            or not d.eco_idle_minutes > 0:
        raise UserError("[dynos] eco_idle_minutes must be a number of minutes above 0 (Heroku: 30).")
    if settings.dynos.hard_limit_ratio < 1.0:
        raise UserError("[dynos] hard_limit_ratio must be at least 1 (the quota itself).")
    a = settings.addons
    if isinstance(a.port_first, bool) or not isinstance(a.port_first, int) or not isinstance(a.port_count, int) \
            or a.port_first < 1024 or a.port_count < 1 or a.port_first + a.port_count > 65536:
        raise UserError("[addons] port_first and port_count must give a range of ports within 1024..65535.")
    if isinstance(a.final_backup_days, bool) or not isinstance(a.final_backup_days, int | float) \
            or not a.final_backup_days >= 0:
        raise UserError("[addons] final_backup_days must be a number of days, 0 or more.")
    from .addons.partner import partner_services

    partner_services(a.partners)
    m = settings.metrics
    retentions = (m.minute_retention, m.coarse_retention)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in retentions) \
            or not isinstance(m.prometheus, bool) or not isinstance(settings.dashboard.listen, str):
        raise UserError("[metrics] minute_retention and coarse_retention must be numbers of seconds, prometheus "
                        "true or false; [dashboard] listen a string like \"127.0.0.1:5080\".")
    if not 3600 <= m.minute_retention <= m.coarse_retention <= 90 * 86400:
        raise UserError("[metrics] minute_retention must be at least 3600 s, and coarse_retention at least that "
                        "and at most 90 days (the file's size grows with both).")
    api = settings.api
    if not all(isinstance(v, str) for v in (api.listen, api.cert, api.hostname)) \
            or isinstance(api.rate_limit, bool) or not isinstance(api.rate_limit, int) or api.rate_limit < 1 \
            or not isinstance(api.fetch_loopback, bool) \
            or isinstance(api.max_connections, bool) or not isinstance(api.max_connections, int) \
            or api.max_connections < 1 or isinstance(api.idle_timeout, bool) \
            or not isinstance(api.idle_timeout, int | float) or not api.idle_timeout > 0:
        raise UserError("[api] listen, cert and hostname must be strings, rate_limit a whole number of requests "
                        "per hour (at least 1), fetch_loopback true or false, max_connections a whole number "
                        "(at least 1), idle_timeout a number of seconds above 0.")
    if api.listen:
        from .api.tls import parse_api_listen

        parse_api_listen(api.listen)
    if settings.dashboard.listen:
        from .dashboard.listener import parse_listen  # checks it is a loopback address

        parse_listen(settings.dashboard.listen)
    _validate_scheduling(settings)
    acm = settings.acm
    for name in ("renew_before_days", "retry_base", "retry_max", "rate_limit_pause", "request_timeout",
                 "order_timeout"):
        if isinstance(getattr(acm, name), bool) or not isinstance(getattr(acm, name), int | float):
            raise UserError(f"[acm] {name} must be a number.")
    for name in ("retry_base", "request_timeout", "order_timeout"):
        if not getattr(acm, name) > 0:  # 0 would retry a failing order without pause: a storm at the CA
            raise UserError(f"[acm] {name} must be more than 0 seconds.")
    if not acm.retry_max >= acm.retry_base or not acm.rate_limit_pause >= 0 or not acm.renew_before_days >= 0:
        raise UserError("[acm] retry_max must be at least retry_base; rate_limit_pause and renew_before_days "
                        "at least 0.")
    return settings


def _validate_scheduling(settings: Settings) -> None:
    rate = settings.scheduler.clock_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 1 <= rate <= 3600:
        raise UserError("[scheduler] clock_rate must be a number from 1 to 3600 (1: real time; more is for tests).")
    a = settings.autoscale
    numbers = (a.window, a.down_ratio, a.cooldown)
    counts = (a.up_windows, a.down_windows)
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers) \
            or any(isinstance(v, bool) or not isinstance(v, int) for v in counts):
        raise UserError("[autoscale] window, down_ratio and cooldown must be numbers; up_windows and down_windows "
                        "whole numbers.")
    if not (0.5 <= a.window <= 3600 and 1 <= a.up_windows <= 60 and 1 <= a.down_windows <= 60
            and 0 < a.down_ratio < 1 and 0 <= a.cooldown <= 86400):
        raise UserError("[autoscale] window must be 0.5-3600 s, up_windows and down_windows 1-60, down_ratio "
                        "between 0 and 1, cooldown 0-86400 s.")


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read dynod.toml (``path``, $DYNOD_CONFIG, or /etc/dynod/dynod.toml when present)."""
    if path is None:
        env = os.environ.get("DYNOD_CONFIG")
        path = Path(env) if env else (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"Settings file {path} does not exist; create it or leave --config out.") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"Settings file {path} is not valid TOML: {exc}.") from None
    settings = _build(Settings, values, str(path or "settings"))
    if overrides:
        settings = replace(settings, **overrides)
    return validate(settings)
