"""An add-on service that speaks Heroku's Add-on Partner API (a test server on loopback, HTTPS with a
private certificate, basic auth) attached to a dynod app: provision, plan change, deprovision."""

from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import secrets
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import free_port, running_dynod

pytestmark = pytest.mark.integration


def _certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "partner.crt", directory / "partner.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Partner:
    """What a partner's provisioning service does, and a record of every call it got."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.resources: dict[str, dict[str, Any]] = {}


def _serve(partner: Partner, cert: Path, key: Path, port: int) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            expected = "Basic " + base64.b64encode(f"mycache:{partner.password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._answer(401, {"message": "bad credentials"})
                return
            partner.calls.append((self.command, self.path, body))
            if self.command == "POST" and self.path == "/heroku/resources":
                rid = f"res-{len(partner.resources) + 1}"
                partner.resources[rid] = {"plan": body["plan"], "uuid": body["uuid"]}
                self._answer(200, {"id": rid, "message": "ready",
                                   "config": {"MYCACHE_URL": f"https://cache.test/{rid}?plan={body['plan']}"}})
            elif self.command == "PUT" and self.path.startswith("/heroku/resources/"):
                rid = self.path.rsplit("/", 1)[1]
                partner.resources[rid]["plan"] = body["plan"]
                self._answer(200, {"config": {"MYCACHE_URL": f"https://cache.test/{rid}?plan={body['plan']}"}})
            elif self.command == "DELETE" and self.path.startswith("/heroku/resources/"):
                partner.resources.pop(self.path.rsplit("/", 1)[1], None)
                self._answer(204)
            else:
                self._answer(404, {"message": "no such route"})

        do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def partner_dynod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Partner, int]]:
    directory = tmp_path_factory.mktemp("partner")
    cert, key = _certificate(directory)
    partner = Partner(secrets.token_hex(8))
    port, dead_port = free_port(), free_port()
    server = _serve(partner, cert, key, port)
    extra = f"""
[[addons.partners]]
name = "mycache"
human_name = "My Cache"
base_url = "https://127.0.0.1:{port}"
username = "mycache"
password = "{partner.password}"
plans = ["test", "basic"]
config_vars_prefix = "MYCACHE"
ca_file = "{cert}"

[[addons.partners]]
name = "wrongpass"
base_url = "https://127.0.0.1:{port}"
username = "mycache"
password = "not-the-password"
plans = ["test"]
ca_file = "{cert}"

[[addons.partners]]
name = "nobody-home"
base_url = "https://127.0.0.1:{dead_port}"
username = "x"
password = "y"
plans = ["test"]
"""
    try:
        with running_dynod(dynos_extra=extra) as d:
            yield d, partner, port
    finally:
        server.shutdown()


def test_a_partner_addon_is_provisioned_attached_replanned_and_deprovisioned(partner_dynod) -> None:  # type: ignore[no-untyped-def]
    d, partner, _port = partner_dynod
    app = f"p{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    assert "mycache" in d.ctl("addons:services").stdout
    assert "basic" in d.ctl("addons:plans", "mycache").stdout
    out = d.ctl("addons:create", "mycache:test", "-a", app).stdout
    assert "as MYCACHE_URL" in out, out
    [(method, path, body)] = partner.calls
    assert (method, path, body["plan"]) == ("POST", "/heroku/resources", "test") and body["name"].startswith("mycache-")
    config = d.client().request("GET", f"/apps/{app}/config-vars")
    assert config["MYCACHE_URL"] == "https://cache.test/res-1?plan=test"
    addon = d.client().list_addons(app)[0]["name"]

    d.ctl("addons:attach", addon, "-a", app, "--as", "CACHE")  # the prefix is the attachment's name
    assert d.client().request("GET", f"/apps/{app}/config-vars")["CACHE_URL"] == "https://cache.test/res-1?plan=test"

    out = d.ctl("addons:upgrade", addon, "basic", "-a", app).stdout
    assert "Released" in out and partner.resources["res-1"]["plan"] == "basic"
    config = d.client().request("GET", f"/apps/{app}/config-vars")
    assert config["MYCACHE_URL"] == config["CACHE_URL"] == "https://cache.test/res-1?plan=basic"
    assert d.client().get_release(app, None)["addons"][0]["plan"]["name"] == "mycache:basic"

    d.ctl("addons:destroy", addon, "-a", app, "--confirm", addon)
    assert partner.calls[-1][:2] == ("DELETE", "/heroku/resources/res-1") and partner.resources == {}
    config = d.client().request("GET", f"/apps/{app}/config-vars")
    assert "MYCACHE_URL" not in config and "CACHE_URL" not in config
    d.ctl("apps:destroy", "-a", app, "--confirm", app)


def test_a_partner_that_refuses_or_is_away_changes_nothing(partner_dynod) -> None:  # type: ignore[no-untyped-def]
    d, partner, _port = partner_dynod
    app = f"p{secrets.token_hex(4)}"
    d.ctl("apps:create", app)
    before = d.client().request("GET", f"/apps/{app}/releases")
    calls = len(partner.calls)
    for argv, message in [(["addons:create", "wrongpass", "-a", app], "wrongpass refused: bad credentials"),
                          (["addons:create", "nobody-home", "-a", app], "nobody-home did not answer"),
                          (["addons:create", "mycache:gold", "-a", app], "Couldn't find that plan")]:
        result = d.ctl(*argv, check=False)
        assert result.returncode == 1 and message in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr
    assert d.client().request("GET", f"/apps/{app}/releases") == before
    assert d.client().list_addons(app) == [] and len(partner.calls) == calls
    d.ctl("apps:destroy", "-a", app, "--confirm", app)
