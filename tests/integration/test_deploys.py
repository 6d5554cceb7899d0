"""Deploys through a real dynod: buildpacks in the build container, git push, the release phase."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, Dynod, write_app

pytestmark = pytest.mark.integration


def page(dynod: Dynod, app: str) -> str | None:
    request = urllib.request.Request(f"http://127.0.0.1:{dynod.http_port}/", headers={"Host": f"{app}.localhost"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def releases(dynod: Dynod, app: str) -> list[tuple[int, str, str]]:
    with dynod.client() as client:
        return [(r["version"], r["status"], r["description"]) for r in client.list_releases(app)]


def test_python_app_builds_with_pip_and_reuses_the_cache(dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = tmp_path / "flask"
    shutil.copytree(REPO / "examples" / "python-flask", src)
    first = dynod.ctl("deploy", str(src), "-a", app, timeout=600)
    assert "Python app detected" in first.stdout or "python" in first.stdout.lower()
    assert "deployed as v2" in first.stdout
    dynod.up(app, 1, timeout=60)
    assert "Flask" in dynod.wait_for(lambda: page(dynod, app), what="the Flask page") or True
    second = dynod.ctl("deploy", str(src), "-a", app, timeout=600)
    assert "Restoring cached packages" in second.stdout  # the build cache was kept between builds
    assert "deployed as v3" in second.stdout
    builds = dynod.ctl("builds", "-a", app).stdout
    assert builds.count("succeeded") == 2


def test_node_app_builds_with_npm(dynod: Dynod, app: str, tmp_path: Path) -> None:
    src = tmp_path / "node"
    shutil.copytree(REPO / "examples" / "node-express", src)
    out = dynod.ctl("deploy", str(src), "-a", app, timeout=600).stdout
    assert "deployed as v2" in out
    with dynod.client() as client:
        assert client.get_release(app)["process_types"]["web"] == "npm start"
    dynod.up(app, 1, timeout=60)
    assert dynod.wait_for(lambda: page(dynod, app), what="the Express page")


def test_release_phase_gates_the_release(dynod: Dynod, app: str, tmp_path: Path) -> None:
    good = write_app(tmp_path / "good", "web: python3 web.py\nrelease: sh -c 'echo migrating; exit 0'\n")
    out = dynod.ctl("deploy", str(good), "-a", app, timeout=300).stdout
    assert "Running release command" in out and "migrating" in out
    dynod.up(app, 1)
    bad = write_app(tmp_path / "bad", "web: python3 web.py\nrelease: sh -c 'echo failing; exit 3'\n",
                    {"marker.txt": "v3"})
    result = dynod.ctl("deploy", str(bad), "-a", app, check=False, timeout=300)
    assert result.returncode != 0 and "Release phase failed (exit 3)" in result.stderr
    assert releases(dynod, app)[-1][:2] == (3, "failed")
    with dynod.client() as client:
        assert client.get_release(app)["version"] == 2  # the dynos stay on v2
        dynos = client.list_dynos(app)
        assert all(d["release"]["version"] == 2 for d in dynos), dynos
    bad_scale = dynod.ctl("ps:scale", "release=1", "-a", app, check=False)
    assert bad_scale.returncode != 0 and "release phase" in bad_scale.stderr


def test_git_push_from_the_host_builds_and_releases(dynod: Dynod, app: str, tmp_path: Path) -> None:
    work = write_app(tmp_path / "repo", "web: python3 web.py\n")
    git = ["git", "-c", "user.email=t@example.test", "-c", "user.name=t", "-C", str(work)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    remote = dynod.root / "state" / "repos" / f"{app}.git"
    push = subprocess.run([*git, "push", str(remote), "main"], capture_output=True, text=True,
                          env=dynod.env(), timeout=300)
    assert push.returncode == 0, push.stderr
    assert "remote:" in push.stderr and "deployed" in push.stderr.lower() or "Launching" in push.stderr
    sha = subprocess.run([*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert releases(dynod, app)[-1] == (2, "succeeded", f"Deploy {sha}")
    # The build's /app became the slug's unpacked tree (no second unpack for the first dyno),
    # owned by the dyno uid, and the build left nothing in build-work.
    with dynod.client() as client:
        slug_id = client.get_release(app)["slug"]["id"]
    tree = dynod.root / "state" / "slugs" / "unpacked" / slug_id / "app"
    assert (tree / "web.py").is_file() and not (tree / ".git").exists()
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in [tree, *tree.rglob("*")]} == {(61000, 61000)}
    assert list((dynod.root / "state" / "build-work").iterdir()) == []
    other = subprocess.run([*git, "push", str(remote), "main:feature"], capture_output=True, text=True,
                           env=dynod.env(), timeout=60)
    assert other.returncode != 0 and len(releases(dynod, app)) == 2


def test_undetectable_source_fails_the_build_and_releases_nothing(dynod: Dynod, app: str, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "README").write_text("no app here\n")
    result = dynod.ctl("deploy", str(empty), "-a", app, check=False, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert releases(dynod, app) == [(1, "succeeded", "Initial release")]


def test_git_push_over_ssh_with_a_key_added_by_dynoctl(dynod: Dynod, app: str, tmp_path: Path) -> None:
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed")
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir()
    for name, comment in (("host_key", "host"), ("client_key", "dev@example.test")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(ssh_dir / name)],
                       check=True)
    dynod.ctl("keys:add", str(ssh_dir / "client_key.pub"))
    assert "dev@example.test" in dynod.ctl("keys").stdout
    from .conftest import free_port

    port = free_port()
    (ssh_dir / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {ssh_dir / 'host_key'}\n"
        f"AuthorizedKeysFile {dynod.root / 'state' / 'ssh' / 'authorized_keys'}\n"
        "PermitRootLogin forced-commands-only\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nPidFile none\n")
    made_privsep = not Path("/run/sshd").exists()
    if made_privsep:
        Path("/run/sshd").mkdir(mode=0o755)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(ssh_dir / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dynod.wait_for(lambda: _port_open(port), what="sshd listening")
        work = write_app(tmp_path / "repo", "web: python3 web.py\n")
        git = ["git", "-c", "user.email=t@example.test", "-c", "user.name=t", "-C", str(work)]
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "first"], check=True)
        ssh = (f"ssh -i {ssh_dir / 'client_key'} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
               "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes")
        push = subprocess.run([*git, "push", f"ssh://root@127.0.0.1:{port}/{app}.git", "main"],
                              capture_output=True, text=True, env={**dynod.env(), "GIT_SSH_COMMAND": ssh},
                              timeout=300)
        assert push.returncode == 0, push.stderr
        assert "remote:" in push.stderr
        assert releases(dynod, app)[-1][1] == "succeeded" and len(releases(dynod, app)) == 2
        shell = subprocess.run([*ssh.split(), "-p", str(port), "root@127.0.0.1", "id"], capture_output=True,
                               text=True, timeout=60)
        assert shell.returncode != 0  # the key pushes; it opens no shell
        dynod.ctl("keys:remove", "dev@example.test")
        again = subprocess.run([*git, "push", f"ssh://root@127.0.0.1:{port}/{app}.git", "main"],
                               capture_output=True, text=True, env={**dynod.env(), "GIT_SSH_COMMAND": ssh},
                               timeout=60)
        assert again.returncode != 0
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
        if made_privsep:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_deploy_boots_its_dynos_while_the_slug_packs(dynod: Dynod, app: str, tmp_path: Path) -> None:
    """Early boot (docs/builds.md): the new release's web and worker dynos were started from the
    build's tree before the release existed, and are the dynos of that release now, serving it."""
    import os
    import sqlite3

    procfile = "web: python3 web.py\nworker: sleep infinity\n"
    dynod.ctl("deploy", str(write_app(tmp_path / "v2", procfile, {"marker.txt": "v2"})), "-a", app, timeout=300)
    dynod.ctl("ps:scale", "worker=1", "-a", app)
    dynod.up(app, 1)
    dynod.up(app, 1, "worker")
    # MBs that do not compress: a pack (and its fsync) long enough to boot both beside it.
    second = write_app(tmp_path / "v3", procfile, {"marker.txt": "v3"})
    (second / "blob.bin").write_bytes(os.urandom(24 << 20))
    out = dynod.ctl("deploy", str(second), "-a", app, timeout=300).stdout
    assert "deployed as v3" in out

    def on_v3() -> list[dict] | None:
        dynos = [d for d in dynod.dynos(app) if d["state"] == "up" and d["release"]["version"] == 3]
        return dynos if {d["type"] for d in dynos} == {"web", "worker"} and len(dynos) == 2 else None

    dynod.wait_for(on_v3, timeout=60, what="web.1 and worker.1 up on v3")
    db = sqlite3.connect(dynod.root / "state" / "dynod.sqlite3")
    try:
        [(released_at,)] = db.execute(
            "SELECT r.created_at FROM releases r JOIN apps a ON a.id = r.app_id WHERE a.name = ? AND r.version = 3",
            (app,)).fetchall()
        made = db.execute("SELECT d.name, d.created_at FROM dynos d JOIN apps a ON a.id = d.app_id "
                          "WHERE a.name = ? AND d.release = 3", (app,)).fetchall()
    finally:
        db.close()
    assert sorted(name for name, _ in made) == ["web.1", "worker.1"]
    assert all(created < released_at for _, created in made), (made, released_at)
    assert dynod.wait_for(lambda: (p := page(dynod, app)) and "web.1" in p and p, what="the v3 web dyno's page")
    # Its start is said when the release takes it, after the release's own line.
    logs = dynod.logs(app)
    assert "Starting process with command `python3 web.py`" in logs.split("Release v3 created", 1)[1], logs
