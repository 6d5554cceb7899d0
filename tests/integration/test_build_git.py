"""Real `git push`es, from the host and over a real sshd on loopback, built for real.

dynod's side of the build request is a test double here: a small HTTP server on a unix socket
that serves ``POST /apps/{app}/builds`` exactly as git.py's hook expects (ndjson lines, then the
build record) and runs the real Builder: the source unpacked, compiled by the real buildpacks in
the bwrap build container, packed by the real slug packer; "releasing" records the version.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from dynod.builds.buildpack import builtin_buildpacks
from dynod.builds.builds import BuildDirs, Builder, BuildRecord, BuildStore
from dynod.builds.git import create_repo
from dynod.builds.keys import AuthorizedKeys
from dynod.builds.slug import pack_directory
from tests.integration.test_build_container import (
    BUILD_UID,
    BwrapBuildContainer,
    build_root,
    live_processes,
    needs_stack,
)

pytestmark = [pytest.mark.integration, needs_stack]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GIT_ENV = {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com", "GIT_COMMITTER_NAME": "Dev",
           "GIT_COMMITTER_EMAIL": "dev@example.com", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


@dataclass
class FakeDynod:
    """The daemon's side of a git push: the build route, a Builder, and what it released."""

    root: Path
    socket: Path
    repos: Path
    builder: Builder
    releases: list[BuildRecord] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each build

    async def serve(self, listener: trio.SocketListener) -> None:
        await trio.serve_listeners(self._connection, [listener])

    async def _connection(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        request, body = None, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert request is not None
        url = urllib.parse.urlsplit(request.target.decode())
        parts = url.path.strip("/").split("/")
        if request.method == b"GET" and len(parts) == 3 and parts[2] == "push-authorization":
            # The hook asks before an SSH push; dynod's answer for a key of the administrator's.
            key = dict(urllib.parse.parse_qsl(url.query)).get("key", "")
            await self._send(stream, conn, 200, {"user": key})
            return
        if request.method != b"POST" or len(parts) != 3 or parts[0] != "apps" or parts[2] != "builds":
            await self._send(stream, conn, 404, {"id": "not_found", "message": "no such route"})
            return
        app, query = parts[1], dict(urllib.parse.parse_qsl(url.query))
        if not (self.repos / f"{app}.git").is_dir():
            await self._send(stream, conn, 404, {"id": "not_found", "message": f"Couldn't find app {app}."})
            return
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[
            ("content-type", "application/x-ndjson"), ("transfer-encoding", "chunked")])))
        send, receive = trio.open_memory_channel[bytes](float("inf"))

        async def drain() -> None:
            async for chunk in receive:
                await stream.send_all(conn.send(h11.Data(data=chunk)))

        async def pack(app_dir: Path, process_types: dict[str, str]) -> Any:
            return await trio.to_thread.run_sync(pack_directory, app_dir, self.root / "slugs")

        async def release(record: BuildRecord, result: Any, slug: Any) -> int:
            self.releases.append(record)
            return len(self.releases)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            started = time.monotonic()
            record = await self.builder.build(
                app, io.BytesIO(bytes(body)), config={}, source=query.get("source", "git"),
                source_version=query.get("source_version"), user=query.get("user"),
                output=lambda line: send.send_nowait(json.dumps({"line": line}).encode() + b"\n"),
                pack=pack, release=release)
            self.spans.append((started, time.monotonic()))
            result = {**record.to_json(), "web_url": f"http://{app}.localhost/"}
            send.send_nowait(json.dumps({"build": result}).encode() + b"\n")
            send.close()
        await stream.send_all(conn.send(h11.EndOfMessage()))
        await stream.aclose()

    @staticmethod
    async def _send(stream: trio.abc.Stream, conn: h11.Connection, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
            ("content-type", "application/json"), ("content-length", str(len(data)))])))
        await stream.send_all(conn.send(h11.Data(data=data)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        await stream.aclose()


@pytest.fixture
async def dynod(nursery: trio.Nursery):
    containers: list[BwrapBuildContainer] = []

    def container_for(d: BuildDirs) -> BwrapBuildContainer:
        container = BwrapBuildContainer(app_dir=d.app, cache_dir=d.cache, env_dir=d.env,
                                        buildpacks_dir=d.buildpacks)
        containers.append(container)
        return container

    with build_root() as root:
        for name in ("work", "cache", "slugs"):
            (root / name).mkdir(mode=0o755)
        builder = Builder(
            BuildStore(root / "builds"), work_root=root / "work", cache_root=root / "cache",
            buildpacks=builtin_buildpacks(), stack="debian-13", uid=BUILD_UID, gid=BUILD_UID,
            container_for=container_for)
        fake = FakeDynod(root=root, socket=root / "api.sock", repos=root / "repos", builder=builder)
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(fake.socket))
        sock.listen(16)
        nursery.start_soon(fake.serve, trio.SocketListener(sock))
        yield fake
        nursery.cancel_scope.cancel()
    # Only this fixture's builds: another test file's builds of the same uid may be running.
    assert live_processes(*containers) == []


def commit_app(path: Path, files: dict[str, str] | Path, message: str = "deploy") -> str:
    if isinstance(files, Path):
        shutil.copytree(files, path, dirs_exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (path / name).write_text(text)
    env = {**os.environ, **GIT_ENV}
    if not (path / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", message], cwd=path, check=True, env=env)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


async def push(src: Path, remote: str, refspec: str = "main", env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(["git", "push", remote, refspec], cwd=src, check=False,
                                  capture_stdout=True, capture_stderr=True,
                                  env={**os.environ, **GIT_ENV, **(env or {})})


def ref_of(repo: Path, ref: str = "refs/heads/main") -> str | None:
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", ref],
                          capture_output=True, text=True)
    return done.stdout.strip() or None


PROCFILE_APP = {"Procfile": "web: python3 -m http.server $PORT\n", "index.html": "hello\n"}


async def test_push_from_the_host_builds_and_releases(dynod: FakeDynod):
    repo = create_repo(dynod.repos, "hostapp", api_socket=dynod.socket)
    sha = commit_app(dynod.root / "src", PROCFILE_APP)
    done = await push(dynod.root / "src", str(repo))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert f"remote: -----> Building hostapp from main ({sha[:8]})" in err
    assert "remote: -----> Procfile app detected" in err
    assert "remote:        Released v1" in err
    assert "remote:        http://hostapp.localhost/ deployed to dynod" in err
    assert ref_of(repo) == sha
    [record] = dynod.releases
    assert (record.source_version, record.user, record.process_types) == (
        sha, "local", {"web": "python3 -m http.server $PORT"})
    stored = dynod.builder.store.get("hostapp")
    assert stored.status == "succeeded" and stored.release == 1
    assert "-----> Procfile app detected" in dynod.builder.store.output("hostapp")
    assert not list((dynod.root / "work").iterdir()), "the build's directories were left behind"


async def test_failed_build_rejects_the_push_and_releases_nothing(dynod: FakeDynod):
    repo = create_repo(dynod.repos, "badapp", api_socket=dynod.socket)
    commit_app(dynod.root / "src", {"notes.txt": "no app here\n"})
    done = await push(dynod.root / "src", str(repo))
    err = done.stderr.decode()
    assert done.returncode != 0
    assert "remote:  !     Push rejected: No default language could be detected" in err
    assert "[remote rejected] main -> main (pre-receive hook declined)" in err
    assert ref_of(repo) is None and dynod.releases == []
    assert dynod.builder.store.get("badapp").status == "failed"


async def test_push_of_another_branch_is_refused_without_a_build(dynod: FakeDynod):
    repo = create_repo(dynod.repos, "branchapp", api_socket=dynod.socket)
    commit_app(dynod.root / "src", PROCFILE_APP)
    done = await push(dynod.root / "src", str(repo), "main:feature")
    assert done.returncode != 0
    assert ("remote:  !     Pushed to feature: dynod deploys only main or master; "
            "push with `git push dynod feature:main`.") in done.stderr.decode()
    assert dynod.builder.store.list("branchapp") == []


async def test_concurrent_pushes_are_serialized_and_the_branch_matches_the_release(dynod: FakeDynod):
    repo = create_repo(dynod.repos, "raceapp", api_socket=dynod.socket)
    base = commit_app(dynod.root / "a", PROCFILE_APP, "base")
    assert (await push(dynod.root / "a", str(repo))).returncode == 0
    subprocess.run(["git", "clone", "-q", str(repo), str(dynod.root / "b")], check=True,
                   env={**os.environ, **GIT_ENV})
    sha_a = commit_app(dynod.root / "a", {"a.txt": "a\n"}, "from a")
    sha_b = commit_app(dynod.root / "b", {"b.txt": "b\n"}, "from b")
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def one(name: str) -> None:
        results[name] = await push(dynod.root / name, str(repo))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "a")
        nursery.start_soon(one, "b")
    codes = sorted(r.returncode != 0 for r in results.values())
    assert codes == [False, True], {k: v.stderr.decode() for k, v in results.items()}
    loser = next(r.stderr.decode() for r in results.values() if r.returncode != 0)
    assert "Another push moved this branch while this one waited" in loser or "fetch first" in loser
    # Builds never overlapped, and what the branch holds is what was released last.
    spans = sorted(dynod.spans)
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))
    assert ref_of(repo) == dynod.releases[-1].source_version in (sha_a, sha_b)
    assert base != ref_of(repo)


# --- over SSH --------------------------------------------------------------------------------


@pytest.fixture
async def sshd(dynod: FakeDynod):
    """A real sshd on a loopback port: temp host key, dynod's authorized_keys, forced commands."""
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed")
    ssh_dir = dynod.root / "ssh"
    ssh_dir.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dev@example.com",
                    "-f", str(ssh_dir / "client_key")], check=True)
    keys = AuthorizedKeys(ssh_dir / "authorized_keys",
                          serve_argv=[sys.executable, "-m", "dynod.builds.git", "serve", "--repos", str(dynod.repos)])
    key = keys.add((ssh_dir / "client_key.pub").read_text())
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (ssh_dir / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1:{port}
HostKey {ssh_dir / 'host_key'}
AuthorizedKeysFile {ssh_dir / 'authorized_keys'}
PermitRootLogin forced-commands-only
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
""")
    made_privsep = not Path("/run/sshd").exists()
    if made_privsep:
        Path("/run/sshd").mkdir(mode=0o755)  # sshd's privilege separation dir; removed below
    proc = await trio.lowlevel.open_process(["/usr/sbin/sshd", "-D", "-e", "-f", str(ssh_dir / "sshd_config")],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.aclose()
                break
            except OSError:
                await trio.sleep(0.05)
        ssh = (f"ssh -i {ssh_dir / 'client_key'} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
               f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes")
        yield {"port": port, "env": {"GIT_SSH_COMMAND": ssh}, "key": key, "keys": keys, "ssh": ssh}
    finally:
        proc.terminate()
        with trio.CancelScope(shield=True):
            await proc.wait()
        if made_privsep:
            shutil.rmtree("/run/sshd", ignore_errors=True)


async def test_push_over_ssh_builds_the_python_example(dynod: FakeDynod, sshd: dict[str, Any]):
    create_repo(dynod.repos, "flaskapp", api_socket=dynod.socket)
    sha = commit_app(dynod.root / "src", EXAMPLES / "python-flask")
    done = await push(dynod.root / "src", f"ssh://root@127.0.0.1:{sshd['port']}/flaskapp.git",
                      env=sshd["env"])
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "remote: -----> Python app detected" in err
    assert "remote:        Successfully installed" in err
    assert "remote:        Procfile declares types     -> web" in err
    assert "remote:        Released v1" in err
    [record] = dynod.releases
    assert record.source_version == sha and record.user == sshd["key"].id
    assert record.process_types["web"].startswith("gunicorn ")


async def test_ssh_key_runs_nothing_but_receive_pack(dynod: FakeDynod, sshd: dict[str, Any]):
    base = ["ssh", *sshd["ssh"].split()[1:], "-p", str(sshd["port"]), "root@127.0.0.1"]
    shell = await trio.run_process([*base, "cat /etc/shadow"], check=False, capture_stdout=True,
                                   capture_stderr=True)
    assert shell.returncode != 0 and b"root:" not in shell.stdout
    assert b"this key opens no shell and runs no commands" in shell.stderr
    missing = await trio.run_process([*base, "git-receive-pack 'nosuchapp.git'"], check=False,
                                     capture_stdout=True, capture_stderr=True)
    assert b"No app named nosuchapp here" in missing.stderr
    # A removed key no longer gets in.
    sshd["keys"].remove("dev@example.com")
    gone = await trio.run_process([*base, "git-receive-pack 'x.git'"], check=False, capture_stdout=True,
                                  capture_stderr=True)
    assert b"Permission denied" in gone.stderr
