"""The newer stack, debian-14 (forky, Python 3.14), through a real dynod whose `stack` it is: an
app whose `.python-version` asks for 3.14 (as Heroku's own python-getting-started does) builds on
its build image and runs on its run image. (The default stack refuses it with one line naming
this stack: tests/unit/test_buildpack_python_manifest.py.) test.sh builds the stack; where
Debian's testing suite would not install, these skip, saying so."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import STACKS, Dynod, running_dynod, write_app
from .test_buildpacks_python import deploy, serve

pytestmark = pytest.mark.integration

WEB = '''
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{sys.version_info[0]}.{sys.version_info[1]} {sys.prefix}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
'''


def _built(name: str) -> bool:
    from dynod.errors import UserError
    from dynod.stack import StackStore

    store = StackStore(STACKS)
    try:
        store.path(name)
        store.path(f"{name}-build")
        return True
    except UserError:  # not built (or its definition changed since): nothing to test on
        return False


@pytest.fixture(scope="module")
def dynod() -> Iterator[Dynod]:
    if not _built("debian-14"):
        pytest.skip(f"stack debian-14 is not built under {STACKS}: ./test.sh builds it "
                    "(`.venv/bin/python -m dynod.stack build debian-14`)")
    with running_dynod(stack="debian-14") as d:
        yield d


def _app(tmp_path: Path) -> Path:
    src = write_app(tmp_path / "py314", "web: python web.py\n", {"web.py": WEB})
    (src / ".python-version").write_text("3.14\n")
    (src / "requirements.txt").write_text("")
    return src


def test_an_app_asking_for_python_3_14_builds_and_runs_on_debian_14(dynod: Dynod, tmp_path: Path) -> None:
    app = f"p{secrets.token_hex(4)}"
    dynod.ctl("apps:create", app)
    try:
        result = deploy(dynod, app, _app(tmp_path))
        assert "Building on the debian-14 stack" in result.stdout, result.stdout
        status, body = serve(dynod, app)
        assert status == 200
        version, prefix = body.split()
        assert version == "3.14", body  # the slug's venv, made from the stack's own Python 3.14
        assert prefix == "/app/.heroku/python", body
    finally:
        dynod.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)
