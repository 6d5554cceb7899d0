"""heroku-buildpack-apt, unmodified, through a real dynod: a Debian package the run image lacks
(GNU hello, one small .deb) is installed into the slug and runs in the app's dynos.

The buildpack is the local copy in tests/fixtures/heroku-buildpack-apt/buildpack (the host that
runs the tests cannot reach GitHub); its apt-get reaches Debian's mirror from the build network.
"""

from __future__ import annotations

import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import STACKS, Dynod, running_dynod

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "heroku-buildpack-apt"
APT_BUILDPACK = FIXTURE / "buildpack"

# A web process that answers with what the apt-installed binary prints: the package is on the
# dyno's PATH through the buildpack's .profile.d script, as on Heroku.
WEB = r'''
import http.server, os, subprocess
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = subprocess.run(["hello", "-g", "from apt"], capture_output=True, check=True).stdout
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
'''


@pytest.fixture(scope="module")
def apt_dynod() -> Iterator[Dynod]:
    # Its own dynod: the buildpack is named by absolute path, which only an operator's
    # local_buildpack_roots allow (the session's dynod has none). This follows [dynos] in its config.
    with running_dynod(dynos_extra=f'\n[builds]\nlocal_buildpack_roots = ["{FIXTURE}"]\n') as d:
        yield d


def page(d: Dynod, app: str) -> str | None:
    request = urllib.request.Request(f"http://127.0.0.1:{d.http_port}/", headers={"Host": f"{app}.localhost"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def test_the_run_image_lacks_the_package() -> None:
    # Otherwise the test below would prove nothing about the buildpack.
    stacks = [p for p in STACKS.glob("*/rootfs") if p.is_dir()]
    assert stacks and not any((p / "usr/bin/hello").exists() for p in stacks)


def test_the_buildpack_is_the_unmodified_public_one() -> None:
    compile_script = (APT_BUILDPACK / "bin" / "compile").read_text()
    # What dynod has to provide for it: a writable buildpack dir (it writes export into it) and
    # absolute symlinks kept in the slug (dpkg -x leaves them); nothing here was changed for dynod.
    assert 'BUILDPACK_EXPORT_FILE="$BP_DIR/export"' in compile_script
    assert 'dpkg -x "$DEB" "$BUILD_DIR/.apt/"' in compile_script
    assert (APT_BUILDPACK / "LICENSE").is_file() and "b6a5d7b9fcc6" in (FIXTURE / "README.md").read_text()


def test_an_aptfile_package_runs_in_the_apps_dynos(apt_dynod: Dynod, tmp_path: Path) -> None:
    d = apt_dynod
    app = f"t{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "Aptfile").write_text("# GNU hello: one small .deb, only libc needed\nhello\n")
        (src / "Procfile").write_text("web: python3 web.py\n")
        (src / "web.py").write_text(WEB)
        d.ctl("buildpacks:set", str(APT_BUILDPACK), "-a", app)
        d.ctl("buildpacks:add", "heroku/procfile", "-a", app)

        built = d.ctl("deploy", str(src), "-a", app, timeout=600).stdout
        assert "-----> Apt app detected" in built, built
        assert "-----> Fetching .debs for hello" in built and "-----> Installing hello_" in built, built
        assert "-----> Exporting environment" in built and "-----> Procfile app detected" in built, built
        d.up(app, 1, timeout=60)
        assert d.wait_for(lambda: page(d, app), what="the app's page") == "from apt\n"

        # A one-off dyno of the same release has it too, from the slug's .apt.
        run = d.ctl("run", "-a", app, "--", "bash", "-c", "command -v hello; hello", timeout=60).stdout
        assert run.splitlines()[-2:] == ["/app/.apt/usr/bin/hello", "Hello, world!"], run

        # The second build reuses the buildpack's cache (the Aptfile did not change).
        again = d.ctl("deploy", str(src), "-a", app, timeout=600).stdout
        assert "-----> Reusing cache" in again, again
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
