"""A private PostgreSQL for the tests: Debian's server binaries, a temp data dir, a unix socket.

PostgreSQL refuses to run as root, so the cluster belongs to ``nobody``; it listens on no TCP
port at all (``listen_addresses=''``), only on a socket in its own 0700 temp dir, so two test runs
at once never meet and nothing on the host can reach it. Root is needed only to start it as
``nobody``: without root (or without the binaries) the tests that need it skip.

``fsync=off``: the tests kill clients, never the server, so durability across a power cut is not
what they prove, and it keeps a CREATE DATABASE per test cheap.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

BIN = Path(os.environ.get("DYNOD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER, GROUP = "nobody", "nogroup"


def unavailable_reason() -> str | None:
    """Why a private server cannot be started here, or None."""
    if os.geteuid() != 0:
        return "a private PostgreSQL runs as another user: needs root"
    for tool in ("initdb", "postgres"):
        if not (BIN / tool).exists():
            return f"PostgreSQL server binaries not found in {BIN} (apt-get install postgresql)"
    return None


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dynod-pg-"))
        self.data = self.root / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 5432  # only names the socket file: there is no TCP listener

    def _as_postgres(self) -> dict[str, object]:
        return {"user": USER, "group": GROUP, "extra_groups": [], "cwd": self.root}

    def start(self) -> None:
        try:
            shutil.chown(self.root, USER, GROUP)
            os.chmod(self.root, 0o700)
            subprocess.run([str(BIN / "initdb"), "-D", str(self.data), "-U", "dynod", "-A", "trust",
                            "-E", "UTF8", "--locale=C", "--no-sync"], check=True,
                           capture_output=True, **self._as_postgres())  # type: ignore[call-overload]
            log = open(self.root / "postgres.log", "wb")  # noqa: SIM115 - the server's stderr while it runs
            self.proc = subprocess.Popen(
                [str(BIN / "postgres"), "-D", str(self.data), "-k", str(self.root), "-p", str(self.port),
                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=100"],
                stdout=log, stderr=log, **self._as_postgres())  # type: ignore[call-overload]
            log.close()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}: {self.log_tail()}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not come up: {self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return (self.root / "postgres.log").read_text()[-2000:]
        except OSError:
            return ""

    def url(self, database: str) -> str:
        return f"postgresql://dynod@/{database}?host={self.root}&port={self.port}"

    def create_database(self) -> str:
        """A fresh, empty database (a random name); its URL."""
        import psycopg

        name = f"ledger_{secrets.token_hex(6)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: clients cut, no checkpoint wait
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
