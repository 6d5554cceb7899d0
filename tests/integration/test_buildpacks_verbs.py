"""dynoctl buildpacks verbs through a real dynod: the app's list drives the next build, in order."""

from __future__ import annotations

import secrets
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Dynod, free_port, running_dynod

pytestmark = pytest.mark.integration

WEB = r'''
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        mark = open("mark").read().strip() if os.path.exists("mark") else "no-mark"
        body = f"{mark} first-ran={os.path.exists('ran-first')}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
'''


@pytest.fixture(scope="module")
def packs() -> Iterator[Path]:
    """The operator's local buildpack root, holding one test buildpack that hands on an export."""
    root = Path(tempfile.mkdtemp(prefix="dynod-it-packs-"))
    first = root / "first" / "bin"
    first.mkdir(parents=True)
    (first / "detect").write_text("#!/bin/sh\necho First\n")
    # Its export is sourced before the next buildpack's compile (Heroku's multi-buildpack rule).
    (first / "compile").write_text('#!/bin/sh\nset -e\necho "       first compiled"\necho first > "$1/ran-first"\n'
                                   'echo "export FIRST_MARK=handed-on" > "$(dirname "$0")/../export"\n')
    for script in first.iterdir():
        script.chmod(0o755)
    try:
        yield root
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


API_PORT = free_port()


@pytest.fixture(scope="module")
def own_dynod(packs: Path) -> Iterator[Dynod]:
    # A dynod of its own: the session's has no local buildpack roots and no Platform API listener.
    # (These sections follow [dynos] in the test config.)
    extra = f'\n[builds]\nlocal_buildpack_roots = ["{packs}"]\n[api]\nlisten = "127.0.0.1:{API_PORT}"\n'
    with running_dynod(dynos_extra=extra) as d:
        yield d


def page(dynod: Dynod, app: str) -> str | None:
    request = urllib.request.Request(f"http://127.0.0.1:{dynod.http_port}/", headers={"Host": f"{app}.localhost"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def test_the_apps_buildpacks_run_in_order_and_clearing_them_detects_again(own_dynod: Dynod, packs: Path,
                                                                          tmp_path: Path) -> None:
    d = own_dynod
    app = f"t{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    try:
        src = tmp_path / "src"
        (src / "bin").mkdir(parents=True)
        (src / "requirements.txt").write_text("")
        (src / "Procfile").write_text("web: python web.py\n")
        (src / "web.py").write_text(WEB)
        # Python's bin/pre_compile hook runs inside the python compile: it sees what the export gave.
        (src / "bin" / "pre_compile").write_text('#!/bin/sh\necho "${FIRST_MARK:-unset}" > mark\n')
        first = str(packs / "first")

        assert d.ctl("buildpacks", "-a", app).stdout == f"{app} has no Buildpack URL set.\n"
        out = d.ctl("buildpacks:set", first, "-a", app).stdout
        assert out.startswith(f"Buildpack set. Next release on {app} will use {first}.\n")
        out = d.ctl("buildpacks:add", "heroku/python", "-a", app).stdout
        assert f"  1. {first}\n  2. heroku/python\n" in out
        # Bad input: one line each, and the list stays as it was.
        for argv, says in [(("buildpacks:add", "heroku/python"), "is already set on your app"),
                           (("buildpacks:add", "/etc"), "outside the directories buildpacks may come from"),
                           (("buildpacks:add", "heroku/cobol"), "is not a buildpack URL or a known buildpack name"),
                           (("buildpacks:add", "-i", "9", "heroku/go"), "Invalid index"),
                           (("buildpacks:remove", "heroku/go"), "Buildpack not found. Nothing was removed.")]:
            bad = d.ctl(*argv, "-a", app, check=False)
            assert bad.returncode == 1 and says in bad.stderr and bad.stderr.count("\n") == 1, (argv, bad.stderr)
        listed = d.ctl("buildpacks", "-a", app).stdout
        assert listed == f"=== {app} Buildpack URLs\n1. {first}\n2. heroku/python\n"
        with d.client() as client:  # not a release, as on Heroku: only the initial v1 so far
            assert [r["version"] for r in client.list_releases(app)] == [1]

        built = d.ctl("deploy", str(src), "-a", app, timeout=600).stdout
        assert f"Using buildpacks from the app's buildpacks: {first}, heroku/python" in built, built
        assert built.index("First app detected") < built.index("first compiled") < built.index("Python app detected")
        d.up(app, 1, timeout=60)
        assert d.wait_for(lambda: page(d, app), what="the app's page") == "handed-on first-ran=True\n"

        out = d.ctl("buildpacks:clear", "-a", app).stdout
        assert out == f"Buildpacks cleared. Next release on {app} will detect buildpacks normally.\n"
        built = d.ctl("deploy", str(src), "-a", app, timeout=600).stdout
        assert "Using buildpacks from" not in built and "First app detected" not in built
        assert "Python app detected" in built
        d.wait_for(lambda: page(d, app) == "unset first-ran=False\n", timeout=60, what="the detected build's page")
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


def test_the_platform_apis_buildpack_installations_are_the_same_list(own_dynod: Dynod) -> None:
    import requests

    d = own_dynod
    email = f"bp-{secrets.token_hex(3)}@example.test"
    with d.client() as client:
        client.request("POST", "/users", {"email": email})
        token = client.request("POST", "/oauth/authorizations", {"user": email})["access_token"]["token"]
    s = requests.Session()
    s.verify = str(d.root / "state" / "api" / "api-self-signed.pem")
    s.trust_env = False
    s.headers.update({"Accept": "application/vnd.heroku+json; version=3", "Authorization": f"Bearer {token}"})
    url = f"https://127.0.0.1:{API_PORT}"
    app = s.post(f"{url}/apps", json={}).json()["name"]
    try:
        put = s.put(f"{url}/apps/{app}/buildpack-installations",
                    json={"updates": [{"buildpack": "heroku-community/apt"}, {"buildpack": "heroku/python"}]})
        assert put.status_code == 200, put.text
        assert [(b["ordinal"], b["buildpack"]["url"]) for b in put.json()] == [
            (0, "heroku-community/apt"), (1, "heroku/python")]
        assert put.json()[0]["app"]["name"] == app and put.json()[0]["app"]["id"]
        assert d.ctl("buildpacks", "-a", app).stdout == (
            f"=== {app} Buildpack URLs\n1. heroku-community/apt\n2. heroku/python\n")
        # Not a config var and not a release, as on Heroku.
        assert "BUILDPACK_URL" not in s.get(f"{url}/apps/{app}/config-vars").json()
        assert [r["version"] for r in s.get(f"{url}/apps/{app}/releases").json()] == [1]
        for bad in ([{"buildpack": "heroku/cobol"}], [{"buildpack": "/etc"}], [{"buildpack": "heroku/go"}] * 2,
                    "heroku/go"):
            refused = s.put(f"{url}/apps/{app}/buildpack-installations", json={"updates": bad})
            assert refused.status_code in (400, 422) and "\n" not in refused.json()["message"], refused.text
        got = s.get(f"{url}/apps/{app}/buildpack-installations").json()
        assert [b["buildpack"]["url"] for b in got] == ["heroku-community/apt", "heroku/python"]
        assert s.put(f"{url}/apps/{app}/buildpack-installations", json={"updates": []}).json() == []
        assert d.ctl("buildpacks", "-a", app).stdout == f"{app} has no Buildpack URL set.\n"
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
