"""heroku-postgresql: one PostgreSQL cluster per add-on, from Debian's server binaries.

Why a cluster each rather than a database each in a shared server: an add-on's memory, its
connections, a crash or a runaway query stay its own (its own cgroup with the plan's memory), and
its data directory is a unit dynod can back up, restore or remove whole. It costs ~20-30 MiB of
memory per add-on and an initdb (1-3 s here) per provisioning; docs/addons.md has the figures.

The cluster listens on the dyno bridge's address, on a port of its own, for the add-on's own
role and database only (pg_hba.conf), with scram-sha-256; the superuser logs in only over the
cluster's unix socket, which only root (dynod) can reach (it lies under the 0700 state dir).
It offers SSL, as Heroku Postgres does (Heroku's Django template connects with sslmode=require),
with a self-signed certificate of its own: clients ask for encryption there, not for a name
checked against a CA. Durability is PostgreSQL's default: every commit is fsynced before it is
acknowledged.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ..errors import NotFound, UserError
from ..model import Addon
from ..private_file import write_private
from ..self_signed import self_signed
from .plans import POSTGRESQL, Plan
from .provider import Provisioned
from .servers import ServerSpec, ServerSupervisor, inner, run_as


def _server_bin() -> Path:
    """Debian's newest installed PostgreSQL (15 on Debian 12, 17 on 13): /usr/lib/postgresql/N/bin."""
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


BIN = _server_bin()
USER = "postgres"  # Debian's system user for PostgreSQL; the server refuses root
SUPERUSER = "postgres"
RESERVED_CONNECTIONS = 3  # superuser_reserved_connections: dynod's pg:info/pg:ps still get in
# The server's certificate: sslmode=require encrypts without checking it (as with Heroku's), and
# the server starts with an expired one, so it is made long-lived and never renewed.
TLS_DAYS = 3650


def _token(n: int = 7) -> str:
    return secrets.token_hex(n)


class PostgresProvider:
    service = POSTGRESQL

    def __init__(self, *, root: Path, supervisor: ServerSupervisor, host: Callable[[], str], subnet: str,
                 ports: Callable[[], int]) -> None:
        self.root = root  # state_dir/addons
        self.supervisor = supervisor
        self._host = host  # the dyno bridge's address, where dynos reach the add-on
        self._subnet = subnet  # the dyno subnet: the only network pg_hba.conf admits
        self._ports = ports  # a free port for a new add-on

    def home(self, name: str) -> Path:
        return self.root / name

    def socket_dir(self, name: str) -> Path:
        return self.home(name) / "run"

    def admin_conninfo(self, addon: Addon, database: str | None = None) -> dict[str, Any]:
        data = addon.provider_data
        return {"host": str(self.socket_dir(addon.name)), "port": int(data["port"]),  # type: ignore[call-overload]
                "user": SUPERUSER, "password": str(data["superuser_password"]),
                "dbname": database or str(data["database"]), "connect_timeout": 5}

    def url(self, data: dict[str, Any]) -> str:
        return f"postgres://{data['user']}:{data['password']}@{data['host']}:{data['port']}/{data['database']}"

    def _spec(self, name: str, app: str, plan: Plan, port: int, superuser_password: str) -> ServerSpec:
        data_dir = inner(name, "volume", "pgdata")
        # shared_buffers a quarter of the plan's memory, as PostgreSQL's docs advise; the rest is
        # for backends and the page cache the cgroup charges too.
        settings = {
            "listen_addresses": self._host(), "port": str(port), "unix_socket_directories": inner(name, "run"),
            "max_connections": str(plan.connections + RESERVED_CONNECTIONS),
            "superuser_reserved_connections": str(RESERVED_CONNECTIONS),
            "shared_buffers": f"{max(16, plan.memory_mb // 4)}MB", "fsync": "on", "synchronous_commit": "on",
            "password_encryption": "scram-sha-256", "logging_collector": "off", "log_min_messages": "warning",
            "dynamic_shared_memory_type": "posix", "max_wal_size": "256MB",
            # Outside the volume, so the host can read them: dynod's own pg_hba.conf, the pid
            # file by which the next dynod adopts a running server, the certificate and its key.
            "hba_file": inner(name, "pg_hba.conf"), "external_pid_file": inner(name, "postgres.pid"),
            "ssl": "on", "ssl_cert_file": inner(name, "server.crt"), "ssl_key_file": inner(name, "server.key"),
        }
        argv = [str(BIN / "postgres"), "-D", data_dir]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]

        async def ready() -> None:
            await trio.to_thread.run_sync(self._ping, name, port, superuser_password)

        return ServerSpec(key=name, app=app, home=self.home(name), argv=tuple(argv), user=USER,
                          pidfile=self.home(name) / "postgres.pid", memory_mb=plan.memory_mb,
                          log_file=self.home(name) / "postgres.log", ready=ready, stop_signal=signal.SIGINT,
                          stale=(inner(name, "volume", "pgdata", "postmaster.pid"),))

    def _ping(self, name: str, port: int, superuser_password: str) -> None:
        # A login and a query, not the socket file: the file is there while the server is still
        # "starting up" (crash recovery) and refuses every session.
        import psycopg

        with psycopg.connect(host=str(self.socket_dir(name)), port=port, user=SUPERUSER, password=superuser_password,
                             dbname="postgres", connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")

    async def provision(self, *, addon_id: str, name: str, app: str, plan: Plan) -> Provisioned:
        home = self.home(name)
        port = self._ports()
        superuser_password = _token(16)
        data = {"port": port, "host": self._host(), "database": f"d{_token()}", "user": f"u{_token()}",
                "password": _token(24), "superuser_password": superuser_password}
        home.mkdir(parents=True, mode=0o700)
        try:
            for sub in ("run", "wal", "volume"):
                (home / sub).mkdir(mode=0o700)
            pwfile = home / "initdb.pw"
            pwfile.write_text(superuser_password + "\n")
            # Only the add-on's own role, into its own database, from the dyno network; the
            # superuser only over the unix socket. No other line: anything else is refused.
            hba = home / "pg_hba.conf"
            hba.write_text("# written by dynod: see docs/addons.md\n"
                           f"local all {SUPERUSER} scram-sha-256\n"
                           f"host {data['database']} {data['user']} {self._subnet} scram-sha-256\n")
            hba.chmod(0o600)
            self._ensure_tls(name)
            await self._make_volume(home, plan)
            for path in (home, home / "run", home / "wal", home / "volume", pwfile, hba):
                shutil.chown(path, USER, USER)
            # The data on the plan-sized volume; the WAL beside it on the state dir's disk, where
            # max_wal_size bounds it: a full volume fails a write with an error, never the WAL.
            await run_as(name, home, USER, [
                str(BIN / "initdb"), "-D", inner(name, "volume", "pgdata"), f"--waldir={inner(name, 'wal')}",
                "-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256", f"--pwfile={inner(name, 'initdb.pw')}"])
            pwfile.unlink()
            await self.supervisor.ensure(self._spec(name, app, plan, port, superuser_password))
            try:
                await trio.to_thread.run_sync(self._create_role, data, plan, name)
            except Exception as exc:  # psycopg's: one line, the add-on is not made
                raise UserError(f"Provisioning {name} failed: {str(exc).strip().splitlines()[0]}", status=500,
                                code="internal") from None
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.supervisor.stop(name)
                shutil.rmtree(home, ignore_errors=True)
            raise
        return Provisioned(config={"URL": self.url(data)}, provider_data=data)

    def _ensure_tls(self, name: str) -> None:
        """The server's certificate and key in its home (the server's user's, 0600, as PostgreSQL
        requires of a key): made at provisioning, and at the start of an add-on provisioned before
        dynod offered SSL."""
        home = self.home(name)
        if (home / "server.crt").exists() and (home / "server.key").exists():
            return
        # One common name for all (an add-on's own name may be longer than the 64 characters a
        # common name may have); the address is the one its clients connect to.
        cert_pem, key_pem = self_signed("heroku-postgresql", "dynod heroku-postgresql (self-signed)",
                                        days=TLS_DAYS, ips=[ipaddress.ip_address(self._host())])
        write_private(home / "server.key", key_pem, owner=USER)  # the key first: a certificate
        write_private(home / "server.crt", cert_pem, owner=USER)  # alone is never taken for a pair

    async def _make_volume(self, home: Path, plan: Plan) -> None:
        """A sparse file of the plan's storage holding an ext4 file system owned by the server's
        user: the database cannot grow past its plan (PostgreSQL fails the write: "No space left
        on device"), and it takes disk only as it fills."""
        import pwd

        image = home / "storage.img"
        with open(image, "wb") as f:
            f.truncate(plan.storage_mb * 1024 * 1024)
        image.chmod(0o600)
        owner = pwd.getpwnam(USER)
        result = await trio.run_process(
            ["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "dynod-addon",
             "-E", f"root_owner={owner.pw_uid}:{owner.pw_gid},lazy_itable_init=1,lazy_journal_init=1", str(image)],
            capture_stdout=True, capture_stderr=True, check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if result.returncode != 0:
            raise UserError(f"Could not make the add-on's storage volume: {result.stderr.decode().strip()[-300:]}",
                            status=500, code="internal")

    def _create_role(self, data: dict[str, Any], plan: Plan, name: str) -> None:
        import psycopg
        from psycopg import sql

        conninfo = {"host": str(self.socket_dir(name)), "port": data["port"], "user": SUPERUSER,
                    "password": data["superuser_password"], "dbname": "postgres", "connect_timeout": 5}
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            user, database = sql.Identifier(data["user"]), sql.Identifier(data["database"])
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {}").format(
                user, sql.Literal(data["password"]), sql.Literal(plan.connections)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, user))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
            conn.execute(sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(database, user))

    async def start(self, addon: Addon) -> None:
        if not (self.home(addon.name) / "storage.img").exists():
            raise UserError(f"The data of add-on {addon.name} is missing from {self.home(addon.name)}; restore it "
                            "from a backup (pg:backups) or destroy the add-on.", status=500, code="internal")
        await trio.to_thread.run_sync(self._ensure_tls, addon.name)
        await self.supervisor.ensure(self._spec(addon.name, addon.app, self.service.plan(addon.plan),
                                                int(addon.provider_data["port"]),  # type: ignore[call-overload]
                                                str(addon.provider_data["superuser_password"])))

    async def deprovision(self, addon: Addon) -> None:
        await self.supervisor.stop(addon.name)
        await trio.to_thread.run_sync(lambda: shutil.rmtree(self.home(addon.name), ignore_errors=True))

    async def info(self, addon: Addon) -> list[tuple[str, str]]:
        plan = self.service.plan(addon.plan)

        def query() -> list[tuple[str, str]]:
            import psycopg

            with psycopg.connect(**self.admin_conninfo(addon), autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
                tables = conn.execute("SELECT count(*) FROM pg_stat_user_tables").fetchone()[0]  # type: ignore[index]
                conns = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                                     (addon.provider_data["user"],)).fetchone()[0]  # type: ignore[index]
            return [("Plan", plan.name.replace("-", " ").title()), ("Status", "Available"),
                    ("Connections", f"{conns}/{plan.connections}"), ("PG Version", str(version)),
                    ("Data Size", _size(size) + f" / {_size(plan.storage_mb * 1024 * 1024)}"),
                    ("Tables", str(tables)), ("Add-on", addon.name)]

        return await trio.to_thread.run_sync(query)


class PostgresOperations:
    """pg:backups, pg:reset, pg:credentials:rotate, pg:ps and pg:kill on one provider's clusters.
    Every step is the superuser's, over the cluster's unix socket; the app's role is untouched
    except where a step is about it (its password, its sessions)."""

    def __init__(self, provider: PostgresProvider) -> None:
        self.provider = provider

    def _env(self, addon: Addon) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "PGPASSWORD": str(addon.provider_data["superuser_password"]),
                "PGHOST": str(self.provider.socket_dir(addon.name)), "PGPORT": str(addon.provider_data["port"]),
                "PGUSER": SUPERUSER, "PGCONNECT_TIMEOUT": "10"}

    async def _tool(self, addon: Addon, argv: list[str], timeout: float = 3600) -> None:
        with trio.fail_after(timeout):
            result = await trio.run_process(argv, env=self._env(addon), capture_stdout=True, capture_stderr=True,
                                            check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            text = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
            raise UserError(f"{Path(argv[0]).name} failed: {text[-1] if text else f'exit {result.returncode}'}",
                            status=500, code="internal")

    async def dump(self, addon: Addon, path: Path) -> None:
        """pg_dump -Fc of the add-on's database into ``path``, then read back whole (verified)."""
        await self._tool(addon, [str(BIN / "pg_dump"), "--format=custom", "--no-owner", "--no-acl",
                                 f"--file={path}", str(addon.provider_data["database"])])
        await self._tool(addon, [str(BIN / "pg_restore"), "--file=/dev/null", str(path)])

    def _admin(self, addon: Addon, database: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(**self.provider.admin_conninfo(addon, database), autocommit=True)

    def _terminate(self, conn: Any, database: str) -> None:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                     " AND pid <> pg_backend_pid()", (database,))

    async def restore(self, addon: Addon, path: Path) -> None:
        """The dump into a new database first; only if that succeeded does it replace the
        add-on's (a rename: a failed restore leaves the database as it was)."""
        from psycopg import sql

        data = addon.provider_data
        database, user = str(data["database"]), str(data["user"])
        staging = f"{database}_r{secrets.token_hex(3)}"

        def create() -> None:
            with self._admin(addon) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(staging),
                                                                           sql.Identifier(user)))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(staging)))

        def drop_staging() -> None:
            with self._admin(addon) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))

        def swap() -> None:
            old = f"{database}_o{secrets.token_hex(3)}"
            with self._admin(addon) as conn:
                conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(database)))
                try:
                    self._terminate(conn, database)
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(database),
                                                                                  sql.Identifier(old)))
                except BaseException:
                    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                        sql.Identifier(database)))
                    raise
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging),
                                                                              sql.Identifier(database)))
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(old)))

        await trio.to_thread.run_sync(create)
        try:
            await self._tool(addon, [str(BIN / "pg_restore"), "--no-owner", "--no-acl", f"--role={user}",
                                     "--exit-on-error", "--single-transaction", f"--dbname={staging}", str(path)])
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(drop_staging)
            raise
        await trio.to_thread.run_sync(swap)

    async def reset(self, addon: Addon) -> None:
        """Every table and row gone: the database dropped and made again, empty, for the same role."""
        from psycopg import sql

        data = addon.provider_data

        def work() -> None:
            database, user = sql.Identifier(str(data["database"])), sql.Identifier(str(data["user"]))
            with self._admin(addon) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(database))
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, user))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))

        await trio.to_thread.run_sync(work)

    async def rotate(self, addon: Addon) -> dict[str, Any]:
        """A new password for the app's role; its sessions on the old one are ended. The new
        provider data (the caller records it and releases the new URL)."""
        from psycopg import sql

        data = {**addon.provider_data, "password": _token(24)}

        def work() -> None:
            with self._admin(addon) as conn:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(str(data["user"])),
                                                                         sql.Literal(data["password"])))
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                             (data["user"],))

        await trio.to_thread.run_sync(work)
        return data

    async def ps(self, addon: Addon) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            with self._admin(addon) as conn:
                rows = conn.execute(
                    "SELECT pid, state, COALESCE(client_addr::text, 'local') AS source,"
                    " COALESCE(EXTRACT(EPOCH FROM now() - query_start), 0)::float AS running_for,"
                    " wait_event IS NOT NULL AS waiting, query FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid() ORDER BY query_start",
                    (addon.provider_data["database"],)).fetchall()
            return [{"pid": r[0], "state": r[1], "source": r[2], "running_for": round(r[3], 3),
                     "waiting": r[4], "query": r[5]} for r in rows]

        return await trio.to_thread.run_sync(work)

    async def kill(self, addon: Addon, pid: int, force: bool) -> bool:
        """Cancel (or with ``force`` terminate) a session on the add-on's database, no other."""
        def work() -> bool:
            with self._admin(addon) as conn:
                row = conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND datname = %s AND pid <> pg_backend_pid()",
                    (pid, addon.provider_data["database"])).fetchone()
                if row is None:
                    raise NotFound(f"No session {pid} of {addon.name}: see dynoctl pg:ps.")
                function = "pg_terminate_backend" if force else "pg_cancel_backend"
                return bool(conn.execute(f"SELECT {function}(%s)", (pid,)).fetchone()[0])  # type: ignore[index]

        return await trio.to_thread.run_sync(work)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"

