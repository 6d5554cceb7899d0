"""Hostile input from outside, through a real dynod: each attack fails and changes nothing.

Source archives, API bodies, router requests and drain URLs written by whoever holds the API or
reaches the router. Each test tries the attack the way an attacker would and checks the host, the
ledger and the other apps afterwards.
"""

from __future__ import annotations

import io
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dynod.builds.events import BuildFinished

from .conftest import Dynod

pytestmark = pytest.mark.integration


# --- source archives ------------------------------------------------------------------------------

def _member(name: str, data: bytes | None = b"x", **kw: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    for key, value in kw.items():
        setattr(info, key, value)
    if info.isreg():
        info.size = len(data or b"")
    return info, (data or b"") if info.isreg() else None


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], raw_tail: bytes = b"") -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        procfile, text = _member("Procfile", b"web: python3 -m http.server $PORT\n")
        tar.addfile(procfile, io.BytesIO(text or b""))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buf.getvalue()[: -1024 * 10] + raw_tail if raw_tail else buf.getvalue())
    return path


def _build(dynod: Dynod, app: str, archive: Path) -> BuildFinished:
    with dynod.client() as client:
        events = list(client.build(app, archive))
    assert isinstance(events[-1], BuildFinished), events[-1]  # the build ran (and failed)
    return events[-1]


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    """A root-owned host file outside every dynod directory: what the attacks aim to overwrite."""
    target = tmp_path / "victim.conf"
    target.write_text("original\n")
    target.chmod(0o600)
    return target


def _attacks(host_file: Path, planted: Path) -> dict[str, tuple[list, str]]:
    return {
        "symlink then file": ([_member("x", type=tarfile.SYMTYPE, linkname=str(host_file)),
                               _member("x", b"pwned\n", mode=0o777)], "'x' appears twice"),
        "dangling link then file": ([_member("job", type=tarfile.SYMTYPE, linkname=str(planted)),
                                     _member("job", b"* * * * * root touch /pwned\n")], "'job' appears twice"),
        "file beneath a link": ([_member("etc", type=tarfile.SYMTYPE, linkname=str(host_file.parent)),
                                 _member(f"etc/{host_file.name}", b"pwned\n")], "lies beneath etc"),
        "hard link to a host file": ([_member("h", type=tarfile.LNKTYPE, linkname=str(host_file))],
                                     "absolute path"),
        "hard link through ..": ([_member("h", type=tarfile.LNKTYPE, linkname=f"../../..{host_file}")],
                                 "'..' component"),
        "dot-dot name": ([_member(f"../../../../../..{planted}", b"pwned\n")], "'..' component"),
        "absolute name": ([_member(str(planted), b"pwned\n")], "absolute path"),
        "duplicate names": ([_member("a", b"1"), _member("a", b"2")], "'a' appears twice"),
        "device node": ([_member("mem", type=tarfile.CHRTYPE, devmajor=1, devminor=1)], "device node"),
        "setuid file": ([_member("su", b"#!/bin/sh\n", mode=0o4755)], "setuid"),
    }


ATTACKS = list(_attacks(Path("/x"), Path("/y")))


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_hostile_source_archive_is_refused_and_writes_nothing(
        dynod: Dynod, app: str, tmp_path: Path, host_file: Path, attack: str) -> None:
    planted = Path("/etc/cron.d") / f"dynod-test-{secrets.token_hex(4)}"
    members, why = _attacks(host_file, planted)[attack]
    try:
        result = _build(dynod, app, _tar(tmp_path / "src.tar", members))
        assert result.status == "failed", result
        error = result.error or ""
        assert why in error and "\n" not in error, error
        assert host_file.read_text() == "original\n" and (host_file.stat().st_mode & 0o777) == 0o600
        assert host_file.stat().st_nlink == 1
        assert not planted.exists()
        with dynod.client() as client:
            assert [r["version"] for r in client.list_releases(app)] == [1]  # nothing released
        assert list((dynod.root / "state" / "build-work").iterdir()) == []
    finally:
        planted.unlink(missing_ok=True)


def test_a_huge_member_is_refused_without_reading_it(dynod: Dynod, app: str, tmp_path: Path) -> None:
    info = tarfile.TarInfo("huge")
    info.size = 100 << 30  # declared, never sent: refused on the header alone
    archive = _tar(tmp_path / "huge.tar", [], raw_tail=info.tobuf(format=tarfile.PAX_FORMAT))
    result = _build(dynod, app, archive)
    assert result.status == "failed"
    assert "unpacks to more than 2 GB" in (result.error or ""), result
    assert list((dynod.root / "state" / "build-work").iterdir()) == []


@pytest.mark.parametrize("attack", ["symlink then file", "file beneath a link", "hard link to a host file"])
def test_a_hostile_slug_is_refused_and_writes_nothing(
        dynod: Dynod, app: str, tmp_path: Path, host_file: Path, attack: str) -> None:
    from dynod.errors import UserError

    members = {
        "symlink then file": [_member("app/x", type=tarfile.SYMTYPE, linkname="/app/y"),
                              _member("app/x", b"pwned\n")],
        "file beneath a link": [_member("app/etc", type=tarfile.SYMTYPE, linkname="/app"),
                                _member("app/etc/Procfile", b"web: x\n")],
        "hard link to a host file": [_member("app/h", type=tarfile.LNKTYPE, linkname=str(host_file))],
    }[attack]
    slug = tmp_path / "slug.tgz"
    with tarfile.open(slug, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(*_member("app", type=tarfile.DIRTYPE))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    slugs = dynod.root / "state" / "slugs"
    before = sorted(p.name for p in slugs.rglob("*"))
    with dynod.client() as client, pytest.raises(UserError, match="Slug member") as refused:
        client.upload_slug(app, slug)
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in slugs.rglob("*")) == before
    assert host_file.read_text() == "original\n" and host_file.stat().st_nlink == 1


# --- the API ------------------------------------------------------------------------------------

def _raw(dynod: Dynod, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    """One request with exactly these body bytes; the status and the decoded error shape.

    A raw socket, because dynod may answer (413) and close before a large body is all sent: the
    answer is read even when the rest of the body no longer can be written.
    """
    import json
    import socket

    body = body or b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: dynod\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(dynod.socket))
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    try:
        decoded = json.loads(payload) if payload.strip() else {}
    except ValueError:  # a text or chunked success answer (logs): only its status matters here
        decoded = None
    return int(status_line.split()[1]), decoded


def _tracebacks(dynod: Dynod) -> int:
    return (dynod.root / "dynod.log").read_text(errors="replace").count("Traceback")


def _state(dynod: Dynod, app: str) -> tuple:
    with dynod.client() as client:
        return (client.get_config(app), [r["version"] for r in client.list_releases(app)],
                client.get_formation(app))


@pytest.mark.parametrize(("method", "path", "body", "status", "why"), [
    ("GET", "/apps/{app}/releases/v9999999999999999999999", None, 422, "3 or v3"),
    ("GET", "/apps/{app}/releases/v" + "9" * 5000, None, 422, "3 or v3"),
    ("PATCH", "/apps/{app}/config-vars", b"[" * 200_000 + b"]" * 200_000, 400, "nests more than"),
    ("PATCH", "/apps/{app}/config-vars", b'{"A":' * 100_000 + b'"x"' + b"}" * 100_000, 400, "nests more than"),
    ("PATCH", "/apps/{app}/config-vars", b'{"A": "x\\u0000y"}', 422, "NUL"),
    ("PATCH", "/apps/{app}/config-vars", b'{"BIG": "' + b"x" * 900_000 + b'"}', 422, "limited to 32kb"),
    ("PATCH", "/apps/{app}/config-vars", b'{"A": "' + b"x" * (2 << 20) + b'"}', 413, "over"),
    ("POST", "/apps/{app}/releases", b'{"rollback": 99999999999999999999999}', 400, "digits"),
    ("PATCH", "/apps/{app}/formation", b'{"updates": [{"type": "web", "quantity": 1000000000000000}]}',
     422, "from 0 to 100"),
    ("POST", "/apps/{app}/dynos", b'{"command": "true", "env": {"A": "\\u0000"}}', 422, "NUL"),
    ("GET", "/apps/{app}/logs?lines=" + "9" * 5000, None, 422, "whole number"),
])
def test_hostile_api_requests_get_the_error_shape_and_change_nothing(
        dynod: Dynod, app: str, method: str, path: str, body: bytes | None, status: int, why: str) -> None:
    before, tracebacks = _state(dynod, app), _tracebacks(dynod)
    got, payload = _raw(dynod, method, path.format(app=app), body)
    assert got == status, payload
    assert set(payload) == {"id", "message"} and why in payload["message"], payload
    assert "\n" not in payload["message"] and len(payload["message"]) < 300
    assert _state(dynod, app) == before
    assert _tracebacks(dynod) == tracebacks


def test_config_up_to_32kb_is_accepted_and_one_byte_more_is_not(dynod: Dynod, app: str) -> None:
    with dynod.client() as client:
        client.update_config(app, {f"V{i:02d}": "x" * 1020 for i in range(32)})  # 32 * 1023 bytes
        with pytest.raises(Exception, match="limited to 32kb for each app"):
            client.update_config(app, {"MORE": "x" * 100})
        assert "MORE" not in client.get_config(app)
        client.update_config(app, {"V00": None})  # shrinking is always allowed


def test_a_procfile_of_10001_process_types_fails_the_build(dynod: Dynod, app: str, tmp_path: Path) -> None:
    procfile = "".join(f"t{i}: sleep 1\n" for i in range(10_001)).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info, data = _member("Procfile", procfile)
        tar.addfile(info, io.BytesIO(data or b""))
    (tmp_path / "src.tar").write_bytes(buf.getvalue())
    result = _build(dynod, app, tmp_path / "src.tar")
    assert result.status == "failed"
    assert "more than 100 process types" in (result.error or ""), result
    with dynod.client() as client:
        assert [r["version"] for r in client.list_releases(app)] == [1]


# --- log drains ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict_dynod():
    """A dynod with the default drain rule (the session's allows loopback for its receivers)."""
    from .conftest import running_dynod

    with running_dynod(allow_local_drains=False) as d:
        yield d


def _host_global_address() -> str | None:
    import subprocess

    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("198.1"):  # a dynod bridge: covered by the dyno network case
            return address
    return None


def _strict_drain_urls(dynod: Dynod) -> list[tuple[str, str]]:
    urls = [("syslog://127.0.0.1:6379", "loopback"), ("syslog://localhost:22", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "link-local"), ("syslog://0.0.0.0:25", "unspecified"),
            ("https://[::1]:8080/", "loopback"), ("https://[::ffff:127.0.0.1]/", "loopback"),
            (f"syslog://{dynod.subnet.rsplit('.', 1)[0]}.1:5000", "dynos or builds")]
    own = _host_global_address()
    if own is not None:
        urls.append((f"https://{own}:9/", "dynod's own host"))
    return urls


@pytest.mark.parametrize("index", range(8))
def test_drains_to_the_host_are_refused_by_default(strict_dynod: Dynod, index: int) -> None:
    from dynod.errors import UserError

    urls = _strict_drain_urls(strict_dynod)
    if index >= len(urls):
        pytest.skip("this host has no global address of its own")
    url, why = urls[index]
    app = f"t{secrets.token_hex(4)}"
    strict_dynod.ctl("apps:create", app)
    try:
        with strict_dynod.client() as client:
            with pytest.raises(UserError, match=why) as refused:
                client.add_drain(app, url)
            assert refused.value.status == 422 and "\n" not in str(refused.value)
            assert client.list_drains(app) == []
        result = strict_dynod.ctl("drains:add", url, "-a", app, check=False)
        assert result.returncode != 0 and why in result.stderr and result.stderr.count("\n") == 1
    finally:
        strict_dynod.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


def test_the_dyno_and_build_networks_are_refused_even_where_local_drains_are_allowed(dynod: Dynod, app: str) -> None:
    import ipaddress
    import tomllib

    from dynod.errors import UserError

    build_subnet = tomllib.loads(dynod.config.read_text())["network"]["build_subnet"]
    with dynod.client() as client:
        for subnet in (dynod.subnet, build_subnet):
            first = next(ipaddress.ip_network(subnet).hosts())  # the bridge's own address
            with pytest.raises(UserError, match="a network of dynod.s dynos or builds"):
                client.add_drain(app, f"syslog://{first}:5000")
        assert client.list_drains(app) == []


# --- apps:destroy leaves nothing to inherit ------------------------------------------------------

CACHING_BUILDPACK = {
    "bp/bin/detect": "#!/bin/sh\necho Caching\n",
    # Remembers a token in the cache and says when it finds one: what a cached dependency is.
    "bp/bin/compile": '#!/bin/sh\nif [ -f "$2/token" ]; then echo "       inherited $(cat "$2/token")"; fi\n'
                      'head -c 8 /dev/urandom | od -An -tx1 | tr -d " \\n" > "$2/token"\n',
    "bp/bin/release": "#!/bin/sh\necho '--- {}'\n",
}


def _caching_app(path: Path) -> Path:
    path.mkdir()
    (path / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    (path / ".buildpacks").write_text("./bp\n")
    for name, text in CACHING_BUILDPACK.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
        (path / name).chmod(0o755)
    return path


def _traces(dynod: Dynod, app: str, slug_ids: set[str]) -> list[str]:
    state = dynod.root / "state"
    places = [state / "build-cache" / app, state / "repos" / f"{app}.git", state / "builds" / app,
              state / "logs" / app]
    places += [state / "slugs" / f"{s}.tgz" for s in slug_ids]
    places += [state / "slugs" / "unpacked" / s for s in slug_ids]
    return [str(p) for p in places if p.exists()]


def test_a_destroyed_app_leaves_nothing_for_a_new_app_of_its_name(dynod: Dynod, tmp_path: Path) -> None:
    app = f"t{secrets.token_hex(4)}"
    src = _caching_app(tmp_path / "src")
    dynod.ctl("apps:create", app)
    try:
        first = dynod.ctl("deploy", str(src), "-a", app, timeout=300).stdout
        assert "inherited" not in first
        second = dynod.ctl("deploy", str(src), "-a", app, timeout=300).stdout
        assert "inherited" in second  # the cache works, so its absence below means something
        dynod.ctl("config:set", "SECRET=old-tenant", "-a", app)
        with dynod.client() as client:
            slug_ids = {r["slug"]["id"] for r in client.list_releases(app) if r.get("slug")}
        assert slug_ids and _traces(dynod, app, slug_ids)
        shared = sorted(slug_ids)[0]
        other = f"t{secrets.token_hex(4)}"
        dynod.ctl("apps:create", other)
        try:
            with dynod.client() as client:
                client.create_release(other, shared)  # another app runs the same slug
            dynod.ctl("apps:destroy", "-a", app, "--confirm", app)
            assert _traces(dynod, app, slug_ids - {shared}) == []
            assert (dynod.root / "state" / "slugs" / f"{shared}.tgz").exists()  # still used by the other
        finally:
            dynod.ctl("apps:destroy", "-a", other, "--confirm", other, check=False)
        assert _traces(dynod, app, slug_ids) == []

        dynod.ctl("apps:create", app)
        assert "SECRET" not in dynod.ctl("config", "-a", app).stdout
        assert "old-tenant" not in dynod.logs(app) and "Caching" not in dynod.ctl("builds", "-a", app).stdout
        third = dynod.ctl("deploy", str(src), "-a", app, timeout=300).stdout
        assert "inherited" not in third, third
        with dynod.client() as client:
            assert [r["version"] for r in client.list_releases(app)] == [1, 2]
            assert len(client.list_builds(app)) == 1
    finally:
        dynod.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


# --- dyno sizes against the host ------------------------------------------------------------------

def test_a_scale_that_would_overcommit_the_host_is_refused(dynod: Dynod, app: str, tmp_path: Path) -> None:
    from dynod.platform import host_memory_mb

    src = tmp_path / "src"
    src.mkdir()
    (src / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    dynod.ctl("deploy", str(src), "-a", app, timeout=300)
    # performance-L asks 14 GB each: more than 2 x this host's RAM, whatever the other tests run.
    count = int(host_memory_mb() * 2 / 14336) + 1
    result = dynod.ctl("ps:scale", f"web={count}:performance-L", "-a", app, check=False)
    assert result.returncode != 0 and "Not enough memory on this host" in result.stderr, result.stderr
    assert "is left" in result.stderr and result.stderr.count("\n") == 1
    with dynod.client() as client:
        assert [(f["quantity"], f["size"]) for f in client.get_formation(app) if f["type"] == "web"] \
            != [(count, "performance-L")]
        assert all(d["size"] == "standard-1X" for d in client.list_dynos(app))  # the first deploy's web.1


def test_a_build_cache_nested_past_pythons_recursion_is_still_destroyed(dynod: Dynod, tmp_path: Path) -> None:
    # 1,500 levels: beyond the recursion of 3.11's shutil.rmtree (apps:destroy used to fail on it).
    app = f"t{secrets.token_hex(4)}"
    src = _caching_app(tmp_path / "src")
    (src / "bp/bin/compile").write_text('#!/bin/sh\ncd "$2" && i=0 && while [ $i -lt 1500 ]; do '
                                        'mkdir d && cd d && i=$((i+1)); done && echo deep > f\n')
    dynod.ctl("apps:create", app)
    try:
        dynod.ctl("deploy", str(src), "-a", app, timeout=300)
        cache = dynod.root / "state" / "build-cache" / app
        assert (cache / "d").is_dir()
        dynod.ctl("apps:destroy", "-a", app, "--confirm", app)
        assert not cache.exists()
        assert _tracebacks(dynod) == 0 or "RecursionError" not in (dynod.root / "dynod.log").read_text()
    finally:
        dynod.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


# --- every route, hostile path values and bodies: never a 500 ---------------------------------------

HOSTILE_VALUES = ["%00", "a" * 5000, "%2e%2e", "%ff%fe", "v99999999999999999999", "web.1%0d%0aX:1"]
HOSTILE_BODIES = [b"", b"null", b"[]", b"1", b"\xff\xfe", b'{"name": 5, "url": [], "hostname": {}, "command": 1, '
                  b'"updates": "x", "slug": 3, "rollback": {}, "maintenance": "yes", "domain": 1, "env": [], '
                  b'"certificate_chain": [], "private_key": null}', b'{"url": "syslog://a\\u0000b", '
                  b'"hostname": "a\\u0000b", "name": "a\\u0000b", "command": "\\u0000"}']


def test_no_route_answers_500_to_hostile_paths_and_bodies(dynod: Dynod, app: str) -> None:
    from dynod.api.routes import _ROUTES

    tracebacks = _tracebacks(dynod)
    failures = []
    for route in _ROUTES:
        if route.segments in (("shutdown",), ("stacks", "{name}", "actions", "build")):
            continue  # would end the test dynod / build a stack for minutes
        for value in HOSTILE_VALUES:
            for own_app in (True, False):
                path = "/" + "/".join((app if own_app and s == "{app}" else value) if s.startswith("{") else s
                                      for s in route.segments)
                if route.method == "DELETE" and path == f"/apps/{app}":
                    continue  # a valid destroy of the test's own app is not hostile
                for body in HOSTILE_BODIES if route.method in ("POST", "PATCH") else [b""]:
                    status, payload = _raw(dynod, route.method, path, body)
                    in_shape = isinstance(payload, dict) and set(payload) == {"id", "message"}
                    if status >= 500 or (status >= 400 and not in_shape):
                        failures.append((route.method, path[:60], body[:40], status, payload))
    assert failures == []
    assert _tracebacks(dynod) == tracebacks


def test_a_dyno_at_every_limit_at_once_still_starts(dynod: Dynod, app: str, tmp_path: Path) -> None:
    """32kb of config, 32kb of one-off env and an 8192-byte command fit the spawner's message."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "Procfile").write_text("worker: sleep 1000\n")
    dynod.ctl("deploy", str(src), "-a", app, timeout=300)
    with dynod.client() as client:
        client.update_config(app, {f"C{i:02d}": "c" * 1020 for i in range(32)})
        env = {f"E{i:02d}": "e" * 1020 for i in range(32)}
        marker = secrets.token_hex(8)
        command = f"echo {marker} ${{#C31}} ${{#E31}} #" + "x" * (8192 - 60)
        client.run_detached(app, command, env=env)
    dynod.wait_for(lambda: f"{marker} 1020 1020" in dynod.logs(app), timeout=30, what="the one-off's output")
