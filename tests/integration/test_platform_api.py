"""The Platform API over TCP+TLS with real tokens, driven by an unmodified Platform API client
(heroku3 from PyPI) against a real dynod: create, config, deploy a build from a source_blob URL,
scale, releases, rollback, logs, a one-off dyno; then tokens and the permission matrix."""

from __future__ import annotations

import http.server
import json
import secrets
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import Dynod, free_port, running_dynod, write_app

heroku3 = pytest.importorskip("heroku3")


class Api:
    """What the tests need of the listener: its URL and the certificate to pin."""

    def __init__(self, d: Dynod, port: int) -> None:
        self.d = d
        self.url = f"https://127.0.0.1:{port}"
        self.cert = d.root / "state" / "api" / "api-self-signed.pem"

    def root(self, method: str, path: str, payload: object = None) -> object:
        with self.d.client() as client:
            return client.request(method, path, payload)

    def user(self, email: str) -> str:
        """A new user and a token for them (as root, over the socket)."""
        self.root("POST", "/users", {"email": email})
        made = self.root("POST", "/oauth/authorizations", {"user": email, "description": "tests"})
        return made["access_token"]["token"]  # type: ignore[index]

    def session(self, token: str | None = None) -> requests.Session:
        session = requests.Session()
        session.verify = str(self.cert)
        session.trust_env = False
        session.headers["Accept"] = "application/vnd.heroku+json; version=3"
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        return session

    def heroku(self, token: str):  # type: ignore[no-untyped-def]
        # heroku3.from_key would verify the key against api.heroku.com before we could point it
        # here; the same two steps, with this host's URL first.
        session = self.session()
        client = heroku3.api.Heroku(session=session)
        client._heroku_url = self.url
        assert client.authenticate(token)
        return client


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    port = free_port()
    with running_dynod(dynos_extra=f'[api]\nlisten = "127.0.0.1:{port}"\nfetch_loopback = true\n') as d:
        yield Api(d, port)


@pytest.fixture
def blob_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on loopback serving tmp_path/blobs (a build's source_blob URL)."""
    root = tmp_path / "blobs"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def source_tarball(src: Path, into: Path) -> Path:
    with tarfile.open(into, "w:gz") as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    return into


def test_heroku3_drives_the_common_flows(api: Api, blob_server: tuple[str, Path], tmp_path: Path) -> None:
    token = api.user(f"alice-{secrets.token_hex(3)}@example.test")
    h = api.heroku(token)
    assert h.account().email.startswith("alice-")
    assert int(h.ratelimit_remaining()) > 0

    name = f"h3-{secrets.token_hex(3)}"
    app = h.create_app(name=name)
    try:
        assert name in [a.name for a in h.apps()]
        assert app.stack.name and len(app.id) == 36
        app.update_config({"GREETING": "hola"})
        assert app.config()["GREETING"] == "hola"

        base, root = blob_server
        source_tarball(write_app(tmp_path / "src", "web: python3 web.py\n"), root / "src.tgz")
        build = app.create_build(f"{base}/src.tgz", version="abc1234")
        assert build.status == "succeeded", build.__dict__
        assert "Launching" in requests.get(build.output_stream_url, verify=str(api.cert)).text
        # The output URL's secret opens that output only, not the app's log stream.
        secret = build.output_stream_url.rsplit("/", 1)[1]
        assert requests.get(f"{api.url}/log-sessions/{secret}", verify=str(api.cert)).status_code == 404

        formation = app.batch_scale_formation_processes({"web": 1})
        assert [(f.type, f.quantity) for f in formation] == [("web", 1)]
        api.d.up(name, 1)
        # Heroku's CLI sends quantities as strings: accepted too, on the single-process route.
        with api.session(token) as s:
            answer = s.patch(f"{api.url}/apps/{name}/formation/web", json={"quantity": "1"})
            assert answer.status_code == 200 and answer.json()["quantity"] == 1

        releases = app.releases()
        versions = [r.version for r in releases]
        assert versions == sorted(versions) and versions[-1] == 3  # v1 initial, v2 config, v3 deploy
        assert all(r.user.email.startswith("alice-") for r in list(releases))
        with api.session(token) as s:
            config = s.get(f"{api.url}/apps/{name}/releases/2/config-vars").json()
            assert config == {"GREETING": "hola"}

        app.update_config({"GREETING": "bonjour"})  # v4
        v3 = next(r for r in app.releases() if r.version == 3)
        app.rollback(v3.id)  # by the release's id, as Heroku's clients do
        latest = list(app.releases())[-1]
        assert latest.version == 5 and "Rollback to v3" in latest.description
        assert app.config()["GREETING"] == "hola"

        # The rest of the app's resources through heroku3's own calls.
        slug_id = latest.slug.id
        with api.session(token) as s:
            slug = s.get(f"{api.url}/apps/{app.id}/slugs/{slug_id}").json()
            assert slug["process_types"] == {"web": "python3 web.py"}
            assert s.get(f"{api.url}/apps/{app.id}/slugs/{'0' * 64}").status_code == 404
        app.update_buildpacks(["heroku/python"])
        with api.session(token) as s:
            installed = s.get(f"{api.url}/apps/{name}/buildpack-installations").json()
            assert [b["buildpack"]["url"] for b in installed] == ["heroku/python"]
        app.update_buildpacks([])
        assert "BUILDPACK_URL" not in app.config()
        assert [f.name for f in app.features()] and all(f.enabled in (True, False) for f in app.features())
        app.add_domain(f"www.{name}.example.test", None)
        assert f"www.{name}.example.test" in [d.hostname for d in app.domains()]
        app.remove_domain(f"www.{name}.example.test")
        assert list(app.sni_endpoints()) == [] and list(app.addons()) == []
        assert [s.name for s in h._get_resources(("stacks",), heroku3.models.Stack)]
        assert app.kill_dyno("web.1")  # Heroku's dyno restart: 202
        api.d.up(name, 1)

        run = app.run_command_detached("echo one-off-was-here")
        assert run.name.startswith("run.")

        def logged() -> bool:
            return "one-off-was-here" in h.get_app_log(name, lines=200, timeout=10)

        api.d.wait_for(logged, timeout=30, what="the one-off's line in the log session")
        # A tail: the logplex_url streams, filtered by dyno, until the client leaves.
        with api.session(token) as s:
            session = s.post(f"{api.url}/apps/{name}/log-sessions",
                             json={"tail": True, "lines": 5, "dyno": "run", "source": "app"}).json()
        with requests.get(session["logplex_url"], stream=True, verify=str(api.cert), timeout=30) as tail:
            assert tail.status_code == 200
            first = next(tail.iter_lines())
            assert b"run." in first and b"web." not in first
        bad = requests.get(session["logplex_url"][:-4] + "xxxx", verify=str(api.cert), timeout=10)
        assert bad.status_code == 404 and bad.json()["id"] == "not_found"
        assert [d.name for d in app.dynos() if d.type == "web"] == ["web.1"]
    finally:
        app.delete()
    assert name not in [a.name for a in h.apps()]


def test_pagination_etags_and_headers(api: Api) -> None:
    token = api.user(f"pat-{secrets.token_hex(3)}@example.test")
    h = api.heroku(token)
    name = f"pg-{secrets.token_hex(3)}"
    h.create_app(name=name)
    try:
        with api.session(token) as s:
            for i in range(4):
                s.patch(f"{api.url}/apps/{name}/config-vars", json={"N": str(i)}).raise_for_status()
            first = s.get(f"{api.url}/apps/{name}/releases", headers={"Range": "version ..; max=2"})
            assert first.status_code == 206 and [r["version"] for r in first.json()] == [1, 2]
            assert first.headers["Request-Id"] and int(first.headers["RateLimit-Remaining"]) > 0
            rest = s.get(f"{api.url}/apps/{name}/releases", headers={"Range": first.headers["Next-Range"]})
            assert [r["version"] for r in rest.json()][:2] == [3, 4]
            newest = s.get(f"{api.url}/apps/{name}/releases", headers={"Range": "version ..; max=1, order=desc"})
            assert [r["version"] for r in newest.json()] == [5]
            etag = s.get(f"{api.url}/apps/{name}").headers["ETag"]
            assert s.get(f"{api.url}/apps/{name}", headers={"If-None-Match": etag}).status_code == 304
            bad = s.get(f"{api.url}/apps/{name}/releases", headers={"Range": "colour ..; max=2"})
            assert bad.status_code == 416 and bad.json()["id"] == "requested_range_not_satisfiable"
            assert bad.headers["Request-Id"]
            bad = s.get(f"{api.url}/apps/{name}/releases", headers={"Range": "version ..; max=99999"})
            assert bad.status_code == 416
            v2 = s.get(f"{api.url}/apps", headers={"Accept": "application/vnd.heroku+json; version=2"})
            assert v2.status_code == 406 and v2.json()["id"] == "not_acceptable"
    finally:
        api.root("DELETE", f"/apps/{name}")


def test_missing_wrong_expired_and_revoked_tokens(api: Api) -> None:
    email = f"tok-{secrets.token_hex(3)}@example.test"
    token = api.user(email)
    name = f"tk-{secrets.token_hex(3)}"
    with api.session(token) as s:
        s.post(f"{api.url}/apps", json={"name": name}).raise_for_status()
    try:
        for headers in ({}, {"Authorization": "Bearer dynod_not-a-token"}, {"Authorization": "Basic !!!"}):
            with api.session() as s:
                # Unauthenticated: the same 401 for an app that exists, one that does not, and no route.
                for path in (f"/apps/{name}", "/apps/no-such-app-here", "/no/such/route"):
                    answer = s.get(api.url + path, headers=headers)
                    assert answer.status_code == 401 and answer.json()["id"] == "unauthorized", answer.text
                    assert name not in answer.text and answer.headers["Request-Id"]
                    assert answer.headers["WWW-Authenticate"] == 'Basic realm="dynod"'  # git asks, then sends it
        short = api.root("POST", "/oauth/authorizations", {"user": email, "expires_in": 1})
        time.sleep(1.5)
        with api.session(short["access_token"]["token"]) as s:  # type: ignore[index]
            answer = s.get(f"{api.url}/account")
            assert answer.status_code == 401 and "expired" in answer.json()["message"]
        with api.session(token) as s:
            mine = s.get(f"{api.url}/oauth/authorizations").json()
            assert {a["id"] for a in mine} >= {short["id"]}  # type: ignore[index]
            made = s.post(f"{api.url}/oauth/authorizations", json={"description": "laptop"}).json()
            second = made["access_token"]["token"]
            assert s.delete(f"{api.url}/oauth/authorizations/{made['id']}").status_code == 200
        with api.session(second) as s:
            answer = s.get(f"{api.url}/apps/{name}")
            assert answer.status_code == 401 and "revoked" in answer.json()["message"]
        with api.session(token) as s:  # basic auth with the token as the password, as Heroku takes it
            s.headers.pop("Authorization")
            assert s.get(f"{api.url}/apps/{name}", auth=("", token)).status_code == 200
    finally:
        api.root("DELETE", f"/apps/{name}")


def test_permission_matrix(api: Api) -> None:
    tag = secrets.token_hex(3)
    owner, collaborator, stranger = (api.user(f"{who}-{tag}@example.test") for who in ("own", "col", "str"))
    name = f"pm-{tag}"
    with api.session(owner) as s:
        s.post(f"{api.url}/apps", json={"name": name}).raise_for_status()
        added = s.post(f"{api.url}/apps/{name}/collaborators", json={"user": f"col-{tag}@example.test"})
        assert added.status_code == 201, added.text
    with api.session(owner) as s:
        app_id = s.get(f"{api.url}/apps/{name}").json()["id"]  # the Platform API's UUID
    # Every app route, with the answer each role gets (collaborators may do all but destroy and share).
    reads = ["/apps/{a}", "/apps/{a}/config-vars", "/apps/{a}/releases", "/apps/{a}/formation", "/apps/{a}/dynos",
             "/apps/{a}/domains", "/apps/{a}/builds", "/apps/{a}/features", "/apps/{a}/log-drains",
             "/apps/{a}/sni-endpoints", "/apps/{a}/collaborators", "/apps/{a}/releases/1",
             "/apps/{a}/releases/1/config-vars", "/apps/{a}/addons", "/apps/{a}/health-check"]
    writes = [("PATCH", "/apps/{a}/config-vars", {"X": "1"}), ("PATCH", "/apps/{a}", {"maintenance": False}),
              ("POST", "/apps/{a}/log-sessions", {"lines": 1}),
              ("PATCH", "/apps/{a}/formation", {"updates": [{"type": "web", "quantity": 0}]}),
              ("DELETE", "/apps/{a}/dynos", None)]
    owner_only = [("POST", "/apps/{a}/collaborators", {"user": f"str-{tag}@example.test"}),
                  ("DELETE", "/apps/{a}/collaborators/" + f"col-{tag}@example.test", None),
                  ("DELETE", "/apps/{a}", None)]
    revoked_email = f"rev-{tag}@example.test"
    revoked = api.user(revoked_email)
    with api.session(owner) as s:
        s.post(f"{api.url}/apps/{name}/collaborators", json={"user": revoked_email}).raise_for_status()
    with api.session(revoked) as s:
        mine = s.get(f"{api.url}/oauth/authorizations").json()
        assert s.delete(f"{api.url}/oauth/authorizations/{mine[0]['id']}").status_code == 200
    try:
        for ref in (name, app_id):
            for path in reads:
                url = api.url + path.format(a=ref)
                for token, want in ((owner, 200), (collaborator, 200), (stranger, 403), (revoked, 401)):
                    with api.session(token) as s:
                        answer = s.get(url)
                        assert answer.status_code == want, (path, want, answer.text)
                        if want == 403:
                            assert answer.json()["id"] == "forbidden"
            for method, path, body in writes:
                url = api.url + path.format(a=ref)
                for token, want in ((collaborator, None), (stranger, 403), (revoked, 401)):
                    with api.session(token) as s:
                        answer = s.request(method, url, json=body)
                        if want == 401:
                            assert answer.status_code == 401, (method, path, answer.text)
                        elif want is None:  # allowed: whatever the route answers, never a refusal
                            assert answer.status_code not in (401, 403), (method, path, answer.text)
                            assert answer.status_code < 500, (method, path, answer.text)
                        else:
                            assert answer.status_code == 403, (method, path, answer.text)
            for method, path, body in owner_only:
                url = api.url + path.format(a=ref)
                for token in (collaborator, stranger):
                    with api.session(token) as s:
                        answer = s.request(method, url, json=body)
                        assert answer.status_code == 403, (method, path, answer.text)
        with api.session(stranger) as s:
            assert name not in json.dumps(s.get(f"{api.url}/apps").json())
            assert s.get(f"{api.url}/users/~/apps").json() == []
            for path in ("/status", "/users", "/stacks/debian-13/actions/build"):
                method = "POST" if path.endswith("build") else "GET"
                assert s.request(method, api.url + path).status_code == 403, path
            assert s.get(f"{api.url}/keys").json() == []  # their own SSH keys only
            assert s.get(f"{api.url}/addons").json() == [] and s.get(f"{api.url}/addon-attachments").json() == []
            assert s.get(f"{api.url}/addons/no-such-addon").status_code == 404
            attach = s.post(f"{api.url}/addon-attachments", json={"addon": "x", "app": name})
            assert attach.status_code == 403, attach.text  # attaching to someone's app is acting on it
            assert s.post(f"{api.url}/shutdown", json={}).status_code == 403
        with api.session(collaborator) as s:
            assert [a["name"] for a in s.get(f"{api.url}/users/~/apps").json()] == [name]
        with api.session(owner) as s:
            assert s.delete(f"{api.url}/apps/{name}/collaborators/col-{tag}@example.test").status_code == 200
        with api.session(collaborator) as s:
            assert s.get(f"{api.url}/apps/{name}").status_code == 403
    finally:
        with api.session(owner) as s:
            s.delete(f"{api.url}/apps/{name}")
    assert name not in json.dumps(api.root("GET", "/apps"))


def test_dynoctl_remote_login_users_and_access(api: Api, tmp_path: Path) -> None:
    """Users and access from the socket, then dynoctl on a 'remote' host: login pins the
    self-signed certificate, and the ordinary commands work over TCP+TLS as the user."""
    import os
    import subprocess

    from .conftest import VENV_BIN

    tag = secrets.token_hex(3)
    added = api.d.ctl("users:add", f"rem-{tag}@example.test").stdout
    token = added.split("Token: ")[1].strip()
    other = api.d.ctl("users:add", f"oth-{tag}@example.test").stdout.split("Token: ")[1].strip()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "DYNOD_SOCKET"}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), DYNOD_HOST=api.url)

    def remote(*args: str, stdin: str | None = None, check: bool = True, as_env: dict | None = None
               ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(VENV_BIN / "dynoctl"), *args], input=stdin, capture_output=True, text=True,
                                env=as_env or env, timeout=120)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    login = remote("login", "--token", "-", stdin=token + "\n")
    assert f"rem-{tag}@example.test" in login.stdout and "Pinning" in login.stderr
    stored = home / ".config" / "dynod" / "credentials.json"
    assert oct(stored.stat().st_mode & 0o777) == "0o600" and token in stored.read_text()
    assert remote("auth:whoami").stdout.strip() == f"rem-{tag}@example.test"
    assert remote("auth:token").stdout.strip() == token
    name = f"rm-{tag}"
    remote("apps:create", name)
    try:
        assert name in remote("apps").stdout
        remote("config:set", "COLOUR=blue", "-a", name)
        assert remote("config:get", "COLOUR", "-a", name).stdout.strip() == "blue"
        shown = remote("releases", "-a", name).stdout
        assert "v2" in shown and f"rem-{tag}@example.test" in shown  # who made it, as Heroku shows
        assert f"rem-{tag}@example.test" in api.d.ctl("releases", "-a", name).stdout  # on the socket too
        assert "By:" in remote("releases:info", "v2", "-a", name).stdout
        assert f"rem-{tag}@example.test" in remote("access", "-a", name).stdout
        # The other user sees nothing of it until added, then may act on it.
        other_env = {**env, "DYNOD_API_TOKEN": other}
        refused = remote("config", "-a", name, check=False, as_env=other_env)
        assert refused.returncode == 1 and "do not have access" in refused.stderr
        assert name not in remote("apps", as_env=other_env).stdout
        remote("access:add", f"oth-{tag}@example.test", "-a", name)
        assert "COLOUR" in remote("config", "-a", name, as_env=other_env).stdout
        gone = remote("apps:destroy", "-a", name, "--confirm", name, check=False, as_env=other_env)
        assert gone.returncode == 1 and "owner" in gone.stderr
        made = remote("authorizations:create", "-d", "ci").stdout
        made_id = made.split("authorization ")[1].split()[0]
        assert made_id in remote("authorizations").stdout
        remote("authorizations:revoke", made_id)
        assert made_id not in remote("authorizations").stdout
        built = remote("deploy", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", name)
        assert "Launching" in built.stdout, built.stdout  # a buildpack build from a tarball, over TLS
        assert api.root("GET", f"/apps/{name}/builds")[-1]["user"] == f"rem-{tag}@example.test"  # type: ignore[index]
        # dynoctl run attached over TLS: stdin in, stdout and stderr apart, the exit code back.
        run = remote("run", "-a", name, "--", "read x; echo out:$x; echo err:$x >&2; exit 7", stdin="hi\n",
                     check=False)
        assert run.returncode == 7 and "out:hi" in run.stdout and "err:hi" in run.stderr, (run.stdout, run.stderr)
        big = remote("run", "-a", name, "--", "head -c 3000000 /dev/zero | tr '\\0' x", check=False)
        assert big.returncode == 0 and len(big.stdout) == 3000000, (len(big.stdout), big.stderr[-300:])
        remote("run:detached", "-a", name, "--", "echo detached-$((6*7))")
        api.d.wait_for(lambda: "detached-42" in remote("logs", "-a", name, "-n", "200").stdout, timeout=30,
                       what="the detached dyno's line in dynoctl logs over TLS")
    finally:
        remote("apps:destroy", "-a", name, "--confirm", name, check=False)
    assert name not in api.d.ctl("apps").stdout
    assert remote("logout").returncode == 0
    assert "Not logged in" in remote("apps", check=False).stderr


def test_git_push_over_https_with_the_token_as_password(api: Api, tmp_path: Path) -> None:
    import subprocess

    tag = secrets.token_hex(3)
    owner, stranger = api.user(f"gp-{tag}@example.test"), api.user(f"gs-{tag}@example.test")
    name = f"gh-{tag}"
    with api.session(owner) as s:
        s.post(f"{api.url}/apps", json={"name": name}).raise_for_status()
    work = write_app(tmp_path / "repo", "web: python3 web.py\n")
    git = ["git", "-c", "user.email=t@example.test", "-c", "user.name=t", "-c", f"http.sslCAInfo={api.cert}",
           "-c", "credential.helper=", "-C", str(work)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_TERMINAL_PROMPT": "0"}
    try:
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "first"], check=True)
        host = api.url.removeprefix("https://")
        # No token, a stranger's token: refused, nothing built.
        for url in (f"https://{host}/{name}.git", f"https://git:{stranger}@{host}/{name}.git"):
            refused = subprocess.run([*git, "push", url, "main"], capture_output=True, text=True, env=env, timeout=60)
            assert refused.returncode != 0, refused.stderr
        assert len(api.root("GET", f"/apps/{name}/releases")) == 1  # type: ignore[arg-type]
        push = subprocess.run([*git, "push", f"https://git:{owner}@{host}/{name}.git", "main"], capture_output=True,
                              text=True, env=env, timeout=300)
        assert push.returncode == 0, push.stderr
        assert "remote: -----> Building" in push.stderr and "Launching" in push.stderr
        sha = subprocess.run([*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True).stdout.strip()
        latest = api.root("GET", f"/apps/{name}/releases")[-1]  # type: ignore[index]
        assert latest["description"] == f"Deploy {sha}" and latest["status"] == "succeeded"
        builds = api.root("GET", f"/apps/{name}/builds")
        assert builds[-1]["user"] == f"gp-{tag}@example.test"  # type: ignore[index]
        assert latest["user"]["email"] == f"gp-{tag}@example.test"  # the release is the pusher's
        clone = subprocess.run(["git", "-c", f"http.sslCAInfo={api.cert}", "clone", "-q",
                                f"https://git:{owner}@{host}/{name}.git", str(tmp_path / "clone")],
                               capture_output=True, text=True, env=env, timeout=60)
        assert clone.returncode == 0 and (tmp_path / "clone" / "web.py").is_file(), clone.stderr
    finally:
        api.root("DELETE", f"/apps/{name}")


def _public_key(comment: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() \
        + f" {comment}"


def test_ssh_keys_push_only_to_their_users_apps(api: Api, tmp_path: Path) -> None:
    """A user's SSH key may push to the apps its user may act on, nothing else. The push runs the
    repository's real pre-receive hook with DYNOD_KEY_ID set, exactly as the SSH forced command
    (`serve`) leaves it before exec'ing git-receive-pack."""
    import os
    import subprocess

    tag = secrets.token_hex(3)
    alice, bob = api.user(f"ka-{tag}@example.test"), api.user(f"kb-{tag}@example.test")
    with api.session(alice) as s:
        added = s.post(f"{api.url}/account/keys", json={"public_key": _public_key(f"ka-{tag}")})
        assert added.status_code == 201, added.text
        key_id = added.json()["id"]
        assert [k["id"] for k in s.get(f"{api.url}/account/keys").json()] == [key_id]
    with api.session(bob) as s:
        assert s.get(f"{api.url}/account/keys").json() == []  # not his
        assert s.delete(f"{api.url}/account/keys/{key_id}").status_code == 404
        name = f"kp-{tag}"
        s.post(f"{api.url}/apps", json={"name": name}).raise_for_status()
    work = write_app(tmp_path / "repo", "web: python3 web.py\n")
    git = ["git", "-c", "user.email=t@example.test", "-c", "user.name=t", "-C", str(work)]
    remote = api.d.root / "state" / "repos" / f"{name}.git"
    try:
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", "first"], check=True)

        def push(key: str) -> subprocess.CompletedProcess[str]:
            env = {**api.d.env(), "DYNOD_KEY_ID": key}
            return subprocess.run([*git, "push", str(remote), "main"], capture_output=True, text=True, env=env,
                                  timeout=300)

        refused = push(key_id)
        assert refused.returncode != 0 and "may not push" in refused.stderr, refused.stderr
        assert "Building" not in refused.stderr and len(api.root("GET", f"/apps/{name}/releases")) == 1  # type: ignore[arg-type]
        assert "no longer authorized" in push("not-a-key").stderr
        with api.session(bob) as s:
            s.post(f"{api.url}/apps/{name}/collaborators", json={"user": f"ka-{tag}@example.test"}).raise_for_status()
        allowed = push(key_id)
        assert allowed.returncode == 0, allowed.stderr
        builds = api.root("GET", f"/apps/{name}/builds")
        assert builds[-1]["user"] == f"ka-{tag}@example.test"  # type: ignore[index]
        with api.session(alice) as s:
            assert s.delete(f"{api.url}/account/keys/{key_id}").status_code == 200
        assert key_id not in json.dumps(api.root("GET", "/keys"))
        assert os.path.exists(remote)
    finally:
        api.root("DELETE", f"/apps/{name}")


def test_one_off_dyno_attached_through_heroku_rendezvous(api: Api, tmp_path: Path) -> None:
    """attach: true answers an attach_url; heroku3's own Rendezvous class (given this host's
    certificate to trust, its one setting) reads the dyno's output through it; a raw client
    speaking Heroku's CLI's variant (secret + CRLF) feeds its stdin."""
    import socket
    import ssl

    from heroku3.models.dyno import Dyno
    from heroku3.rendezvous import Rendezvous

    token = api.user(f"rv-{secrets.token_hex(3)}@example.test")
    h = api.heroku(token)
    name = f"rv-{secrets.token_hex(3)}"
    h.create_app(name=name)
    try:
        api.d.ctl("deploy", str(write_app(tmp_path / "src", "web: python3 web.py\n")), "-a", name, "--no-build")

        def start(command: str) -> Dyno:
            answer = h._http_resource(method="POST", resource=("apps", name, "dynos"),
                                      data=json.dumps({"command": command, "attach": True}))
            assert answer.status_code == 201, answer.text
            return Dyno.new_from_dict(answer.json(), h=h)

        dyno = start("echo out-line; echo err-line >&2")
        assert dyno.attach_url.startswith("rendezvous://127.0.0.1:") and dyno.name.startswith("run.")
        session = Rendezvous(dyno.attach_url, printout=False, timeout_secs=60)
        session.cert = str(api.cert)
        output = session.start()
        assert "out-line" in output and "err-line" in output

        dyno = start("read x; echo got:$x")
        host, port, secret = dyno.attach_url.removeprefix("rendezvous://").replace(":", "/", 1).split("/")
        context = ssl.create_default_context(cafile=str(api.cert))
        with socket.create_connection((host, int(port)), timeout=60) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(secret.encode() + b"\r\n")
            assert tls.recv(64) == b"rendezvous\r\n"
            tls.sendall(b"typed\n")
            received = b""
            while chunk := tls.recv(4096):
                received += chunk
        assert b"got:typed" in received
        with socket.create_connection((host, int(port)), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(secret.encode())  # used once: the same secret again gets nothing
            assert tls.recv(64) == b""
    finally:
        h.app(name).delete()


def test_limits_hold_under_abuse() -> None:
    """A dynod of its own with small limits: the per-user rate limit (and the shared pool of
    unauthenticated attempts), the body size bound, the connection cap, the idle timeout."""
    import socket
    import ssl

    port = free_port()
    extra = f'[api]\nlisten = "127.0.0.1:{port}"\nrate_limit = 5\nmax_connections = 3\nidle_timeout = 1\n'
    with running_dynod(dynos_extra=extra) as d:
        api = Api(d, port)
        token = api.user(f"ab-{secrets.token_hex(3)}@example.test")
        with api.session(token) as s:
            remaining = [s.get(f"{api.url}/account").headers["RateLimit-Remaining"] for _ in range(5)]
            assert remaining == ["4", "3", "2", "1", "0"]
            spent = s.get(f"{api.url}/account")
            assert spent.status_code == 429 and spent.json()["id"] == "rate_limit"
        with api.session() as s:  # guessing tokens spends one shared pool, then 429 before any check
            answers = [s.get(f"{api.url}/apps", headers={"Authorization": f"Bearer guess{i}"}).status_code
                       for i in range(7)]
            assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}
        other = api.user(f"ab2-{secrets.token_hex(3)}@example.test")
        with api.session(other) as s:  # another user's pool is whole
            big = s.post(f"{api.url}/apps", data=b"{" + b" " * (2 << 20) + b"}",
                         headers={"Content-Type": "application/json"})
            assert big.status_code == 413 and big.json()["id"] == "request_too_large"
            assert s.get(f"{api.url}/apps").status_code == 200
        context = ssl.create_default_context(cafile=str(api.cert))
        # Three silent connections fill the listener: a fourth is closed at once, not queued.
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]

        def closed_at_once() -> bool:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.settimeout(3)
                started = time.monotonic()
                try:
                    context.wrap_socket(raw, server_hostname="127.0.0.1").recv(1)
                except TimeoutError:
                    return False  # it got a slot (the silent ones are not all accepted yet)
                except (ssl.SSLError, OSError):
                    return time.monotonic() - started < 1.5
                return False

        try:
            d.wait_for(closed_at_once, timeout=20, what="a connection past max_connections closed at once")
        finally:
            for sock in silent:
                sock.close()
        time.sleep(0.3)
        # A request head that stalls is hung up on after idle_timeout; a stalled body answers 408.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /account HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            assert tls.recv(4096) == b"" and time.monotonic() - started < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"POST /apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + other.encode()
                        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            head = tls.recv(4096)
            assert head.startswith(b"HTTP/1.1 408"), head[:200]
