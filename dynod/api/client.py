"""The control API's client: one method per route, stdlib only.

dynoctl and programs that embed dynod use it. It never imports trio, and it imports
``http.client`` (~40 ms: it pulls in the email parser and ssl) only on the first ordinary request,
so ``dynoctl run`` — which speaks the attach protocol over a plain socket after a hand-written
request head — starts in a few tens of milliseconds. For the same reason ``json`` and
``urllib.parse`` (which bring ``re``: ~8 ms of CPU together) load only when a request needs them:
the attach request's small JSON body and plain path segments are written here.

Every failure is a ``UserError``: the server's ``{"id", "message"}`` answer keeps its status and
code; a missing or refusing socket says how to start dynod.
"""

from __future__ import annotations

# The attach path (dynoctl run) connects with ``_socket`` itself: ``socket`` imports ``enum`` and
# ``selectors`` (~4 ms of every `dynoctl run`); http.client and TLS bring ``socket`` when used.
import _socket
import os
import select

from ..errors import UserError
from .attach import (
    FRAME_NAMES,
    UPGRADE_TOKEN,
    AttachProtocolError,
    Frame,
    FrameDecoder,
    FrameType,
    decode_exit,
    encode_data,
    encode_frame,
    encode_resize,
)

DEFAULT_SOCKET = "/run/dynod/api.sock"
# Large enough that a slug upload is a few syscalls per megabyte.
UPLOAD_BLOCK = 256 * 1024
MAX_RESPONSE_HEAD = 64 * 1024

# typing and http.client are for the type checker only: importing them costs dynoctl startup time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Generator
    from http.client import HTTPConnection, HTTPResponse
    from typing import Any, BinaryIO, TypeVar

    from ..builds.events import BuildEvent

    Json = dict[str, Any]  # a JSON object as the API returns it (shapes: dynod.api.service)
    SocketT = TypeVar("SocketT", bound=_socket.socket)


def default_socket_path(environ: dict[str, str] | None = None) -> str:
    """$DYNOD_SOCKET, else /run/dynod/api.sock."""
    env = os.environ if environ is None else environ
    return env.get("DYNOD_SOCKET") or DEFAULT_SOCKET


def _not_running(path: str) -> UserError:
    return UserError(
        f"dynod is not running (no API socket at {path}): "
        "start it with `systemctl start dynod` or `dynod &`.",
        status=503, code="unavailable",
    )


def _lost(exc: BaseException) -> UserError:
    return UserError(f"Lost the connection to dynod ({exc}).", status=503, code="unavailable")


def _broken(message: str) -> UserError:
    return UserError(message, status=502, code="bad_gateway")


def _connect(path: str, timeout: float | None) -> socket.socket:
    """A connected AF_UNIX ``socket.socket``, what http.client needs (it calls makefile)."""
    import socket

    return _connected(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path, timeout)


def _connect_attach(path: str, timeout: float | None) -> _socket.socket:
    """A connected bare ``_socket.socket``: all the attach protocol uses (send, recv, fileno)."""
    return _connected(_socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM), path, timeout)


def _connected(sock: SocketT, path: str, timeout: float | None) -> SocketT:
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        raise _not_running(path) from None
    except PermissionError:
        sock.close()
        raise UserError(f"Permission denied on the API socket {path}: run as root or join the dynod group.",
                        status=403, code="forbidden") from None
    except BaseException:
        sock.close()
        raise
    return sock


def _error_from(status: int, reason: str, body: bytes) -> UserError:
    import json

    try:
        payload = json.loads(body)
        return UserError(str(payload["message"]), status=status, code=str(payload.get("id", "error")))
    except (ValueError, TypeError, KeyError):
        return UserError(f"dynod answered {status} {reason}.", status=status, code="error")


# What urllib.parse.quote(s, safe="") leaves as it is: a segment made of these needs no quoting.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _path(*segments: str) -> str:
    return "/" + "/".join(_quote(s) for s in segments)


def _quote(segment: str) -> str:
    if _UNRESERVED.issuperset(segment):  # app and dyno names: no need to import urllib.parse
        return segment
    from urllib.parse import quote

    return quote(segment, safe="")


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_string(text: str) -> str:
    """``json.dumps(text)``, character for character (ASCII only: the rest as \\u escapes)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = []
    for char in text:
        code = ord(char)
        if char in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:  # outside the BMP: a UTF-16 surrogate pair, as JSON spells it
            code -= 0x10000
            out.append(f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}")
    return '"' + "".join(out) + '"'


def _json_text(value: object) -> str:
    """``json.dumps(value)`` for the attach requests' fields (null, booleans, ints, strings and
    objects of those) without importing json; any other value is json's to write."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return _json_string(value)
    if type(value) is dict and all(type(key) is str for key in value):
        return "{" + ", ".join(f"{_json_string(key)}: {_json_text(item)}" for key, item in value.items()) + "}"
    import json

    return json.dumps(value)


_connection_class: type | None = None


def _unix_connection_class() -> type:
    """http.client.HTTPConnection over AF_UNIX, built on first use so dynoctl run never imports it."""
    global _connection_class
    if _connection_class is None:
        import http.client

        class UnixHTTPConnection(http.client.HTTPConnection):
            def __init__(self, path: str, timeout: float | None) -> None:
                super().__init__("localhost", timeout=timeout, blocksize=UPLOAD_BLOCK)
                self.socket_path = path

            def connect(self) -> None:
                self.sock = _connect(self.socket_path, self.timeout)

        _connection_class = UnixHTTPConnection
    return _connection_class


class Remote:
    """A dynod reached over TCP+TLS with an API token (``dynoctl login``; docs/api.md).

    ``cafile`` is the certificate pinned at login (a self-signed one), else the system's CAs.
    Requests carry ``Accept: application/vnd.dynod+json``: dynod's own shapes, which dynoctl
    reads, instead of the Platform API's."""

    ACCEPT = "application/vnd.dynod+json"

    def __init__(self, url: str, token: str, cafile: str | None = None) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme != "https" or not parts.hostname:
            raise UserError(f"{url!r} is not a dynod address: give https://HOST[:PORT].")
        try:
            self.port = parts.port or 443
        except ValueError:
            raise UserError(f"{url!r} has no valid port: give https://HOST[:PORT].") from None
        self.host = parts.hostname
        self.url = f"https://{parts.netloc}"
        self.token = token
        self.cafile = cafile

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": self.ACCEPT}

    def context(self) -> Any:
        import ssl

        context = ssl.create_default_context(cafile=self.cafile)
        return context


class ApiClient:
    """A connection to dynod's API socket (or to a remote dynod); methods mirror ``PlatformService``."""

    def __init__(self, socket_path: str | os.PathLike[str], *, timeout: float | None = None,
                 remote: Remote | None = None) -> None:
        self.socket_path = os.fspath(socket_path) if remote is None else remote.url
        self.remote = remote
        self.timeout = timeout
        # Kept alive between requests: apps:info makes several.
        self._connection: HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _new_connection(self) -> HTTPConnection:
        if self.remote is not None:
            import http.client

            return http.client.HTTPSConnection(self.remote.host, self.remote.port, timeout=self.timeout,
                                               context=self.remote.context(), blocksize=UPLOAD_BLOCK)
        return _unix_connection_class()(self.socket_path, self.timeout)

    def _send(self, connection: HTTPConnection, method: str, path: str, body: bytes | BinaryIO | None,
              headers: dict[str, str]) -> HTTPResponse:
        import http.client

        if self.remote is not None:
            headers = {**headers, **self.remote.headers()}
        try:
            connection.request(method, path, body=body, headers=headers)
            return connection.getresponse()
        except UserError:
            raise
        except (http.client.HTTPException, OSError) as exc:
            connection.close()
            raise UserError(f"Lost the connection to dynod on {self.socket_path} ({exc}); is it restarting?",
                            status=503, code="unavailable") from None

    def request(self, method: str, path: str, payload: object = None, *, query: dict[str, str] | None = None,
                ) -> Any:
        """One JSON request on the kept-alive connection; the decoded answer (None for 204)."""
        import http.client
        import json
        from urllib.parse import urlencode

        if query:
            path += "?" + urlencode(query)
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.remote is not None:
            headers.update(self.remote.headers())
        reused = self._connection is not None
        if self._connection is None:
            self._connection = self._new_connection()
        try:
            connection = self._connection
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not reused:
                    raise
                # The server closed an idle kept-alive connection: any request may be retried once
                # on a fresh one, because the first attempt never reached a handler.
                connection.close()
                self._connection = connection = self._new_connection()
                response = self._send(connection, method, path, body, headers)
            data = response.read()
        except UserError:
            self.close()
            raise
        except (http.client.HTTPException, OSError) as exc:
            self.close()
            raise UserError(f"Lost the connection to dynod on {self.socket_path} ({exc}); is it restarting?",
                            status=503, code="unavailable") from None
        if response.will_close:
            self.close()
        if response.status >= 400:
            raise _error_from(response.status, response.reason, data)
        if response.status == 204 or not data:
            return None
        return json.loads(data)

    def _stream(self, method: str, path: str, *, query: dict[str, str] | None = None,
                body: BinaryIO | None = None, headers: dict[str, str] | None = None,
                ) -> Generator[str, None, None]:
        """Lines of a streamed (chunked) answer, each as it arrives, on a connection of its own."""
        import http.client
        from urllib.parse import urlencode

        if query:
            path += "?" + urlencode(query)
        connection = self._new_connection()
        try:
            response = self._send(connection, method, path, body, headers or {})
            if response.status >= 400:
                raise _error_from(response.status, response.reason, response.read())
            try:
                while line := response.readline():
                    yield line.decode("utf-8", "replace").rstrip("\n")
            except http.client.IncompleteRead:
                raise UserError("The stream from dynod ended in the middle; see dynod's log.",
                                status=502, code="stream_broken") from None
            except OSError as exc:
                raise _lost(exc) from None
        finally:
            connection.close()

    # --- apps -----------------------------------------------------------------------------------

    def list_apps(self) -> list[Json]:
        return self.request("GET", "/apps")

    def create_app(self, name: str | None = None) -> Json:
        return self.request("POST", "/apps", {"name": name} if name else {})

    def get_app(self, app: str) -> Json:
        return self.request("GET", _path("apps", app))

    def destroy_app(self, app: str) -> None:
        self.request("DELETE", _path("apps", app))

    def set_maintenance(self, app: str, on: bool) -> Json:
        return self.request("PATCH", _path("apps", app), {"maintenance": on})

    def set_routing_policy(self, app: str, policy: str) -> Json:
        return self.request("PATCH", _path("apps", app), {"routing_policy": policy})

    # --- config vars ----------------------------------------------------------------------------

    def get_config(self, app: str) -> dict[str, str]:
        return self.request("GET", _path("apps", app, "config-vars"))

    def update_config(self, app: str, changes: dict[str, str | None]) -> dict[str, str]:
        return self.request("PATCH", _path("apps", app, "config-vars"), changes)

    # --- buildpacks ------------------------------------------------------------------------------

    def get_buildpacks(self, app: str) -> list[str]:
        return [b["buildpack"]["url"] for b in self.request("GET", _path("apps", app, "buildpack-installations"))]

    def set_buildpacks(self, app: str, urls: list[str]) -> list[str]:
        """Replace the app's whole list (Heroku's PUT); returns the list as stored."""
        answer = self.request("PUT", _path("apps", app, "buildpack-installations"),
                              {"updates": [{"buildpack": url} for url in urls]})
        return [b["buildpack"]["url"] for b in answer]

    # --- slugs and releases ---------------------------------------------------------------------

    def upload_slug(self, app: str, slug_path: str | os.PathLike[str]) -> Json:
        """Stream a slug tarball (tar.gz of app/) to dynod; returns {"id", "size", "process_types"}."""
        import json

        path = os.fspath(slug_path)
        try:
            slug = open(path, "rb")  # noqa: SIM115 - closed below, after the streamed request
        except OSError as exc:
            raise UserError(f"Cannot read the slug {path}: {exc.strerror}.") from None
        connection = self._new_connection()
        try:
            with slug:
                size = os.fstat(slug.fileno()).st_size
                headers = {"Content-Type": "application/gzip", "Content-Length": str(size)}
                response = self._send(connection, "POST", _path("apps", app, "slugs"), slug, headers)
                data = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            raise _error_from(response.status, response.reason, data)
        return json.loads(data)

    def build(self, app: str, archive_path: str | os.PathLike[str], *, source: str = "tarball",
              source_version: str | None = None) -> Generator[BuildEvent, None, None]:
        """Upload source (tar.gz) for a buildpack build; yields its events (dynod.builds.events):
        ``BuildOutput`` lines, then one ``BuildFinished`` or ``BuildFailed``. A line that is no
        event (a stream cut mid-line) is a ``UserError``."""
        # Imported on the first build, not with the client: dynoctl's other commands never load it.
        from ..builds.events import decode_build_event

        query = {"source": source, **({"source_version": source_version} if source_version else {})}
        with open(archive_path, "rb") as archive:
            headers = {"Content-Type": "application/gzip",
                       "Content-Length": str(os.fstat(archive.fileno()).st_size)}
            for line in self._stream("POST", _path("apps", app, "builds"), query=query, body=archive,
                                     headers=headers):
                yield decode_build_event(line)

    def list_builds(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "builds"))

    def build_output(self, app: str, build_id: str | None = None) -> str:
        connection = self._new_connection()
        try:
            response = self._send(connection, "GET", _path("apps", app, "builds", build_id or "latest", "output"),
                                  None, {})
            data = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            raise _error_from(response.status, response.reason, data)
        return data.decode("utf-8", "replace")

    def list_keys(self) -> list[Json]:
        return self.request("GET", "/keys")

    def add_key(self, public_key: str) -> Json:
        return self.request("POST", "/keys", {"public_key": public_key})

    def remove_key(self, which: str) -> None:
        self.request("DELETE", _path("keys", which))

    def list_releases(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "releases"))

    def get_release(self, app: str, version: int | None = None) -> Json:
        which = "current" if version is None else str(version)
        return self.request("GET", _path("apps", app, "releases", which))

    def create_release(self, app: str, slug_id: str, description: str | None = None) -> Json:
        payload: dict[str, object] = {"slug": slug_id}
        if description is not None:
            payload["description"] = description
        return self.request("POST", _path("apps", app, "releases"), payload)

    def rollback(self, app: str, version: int | None = None) -> Json:
        return self.request("POST", _path("apps", app, "releases"), {"rollback": version})

    # --- formation and dynos --------------------------------------------------------------------

    def get_formation(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "formation"))

    def update_formation(self, app: str, updates: list[Json]) -> list[Json]:
        return self.request(
            "PATCH", _path("apps", app, "formation"), {"updates": updates})

    def list_dynos(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "dynos"))

    def restart_dynos(self, app: str, target: str | None = None) -> None:
        path = _path("apps", app, "dynos") if target is None else _path("apps", app, "dynos", target)
        self.request("DELETE", path)

    def stop_dyno(self, app: str, target: str) -> None:
        self.request("POST", _path("apps", app, "dynos", target, "actions", "stop"))

    def run_detached(self, app: str, command: str, size: str | None = None,
                     env: dict[str, str] | None = None) -> Json:
        payload = {"command": command, "size": size, "env": env or {}, "attach": False}
        return self.request("POST", _path("apps", app, "dynos"), payload)

    def _connect_remote(self) -> socket.socket:
        """A TLS socket to the remote dynod, handshake done (run_attached writes its own head)."""
        assert self.remote is not None
        try:
            import socket

            raw = socket.create_connection((self.remote.host, self.remote.port), timeout=self.timeout)
        except OSError as exc:
            raise UserError(f"Cannot reach {self.remote.url} ({exc}).", status=503, code="unavailable") from None
        try:
            return self.remote.context().wrap_socket(raw, server_hostname=self.remote.host)
        except OSError as exc:
            raw.close()
            raise UserError(f"TLS with {self.remote.url} failed ({exc}).", status=503, code="unavailable") from None

    def run_attached(self, app: str, command: str, *, size: str | None = None,
                     env: dict[str, str] | None = None, tty: bool = False, rows: int = 24, cols: int = 80,
                     ) -> AttachSession:
        """Start a one-off dyno wired to this process: a socket speaking attach frames."""
        payload = _json_text({"command": command, "size": size, "env": env or {}, "attach": True,
                              "tty": tty, "rows": rows, "cols": cols}).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (self.remote.headers() if self.remote else {}).items())
        head = (
            f"POST {_path('apps', app, 'dynos')} HTTP/1.1\r\n"
            f"Host: {self.remote.host if self.remote else 'localhost'}\r\n{extra}"
            f"Connection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        sock = _connect_attach(self.socket_path, self.timeout) if self.remote is None else self._connect_remote()
        return _upgrade(sock, head + payload)

    # --- ps:exec: a command inside a running dyno, over the same attach protocol as run ---------

    def exec_attached(self, app: str, dyno: str, command: str = "", *, tty: bool = False, rows: int = 24,
                      cols: int = 80, term: str | None = None) -> AttachSession:
        """Enter the running dyno ``dyno`` (web.1) with ``command`` (bash when empty)."""
        if self.remote is not None:
            raise UserError("ps:exec needs the API socket for now: run it on the dynod host.")
        payload = _json_text({"command": command, "tty": tty, "rows": rows, "cols": cols,
                              "term": term}).encode()
        head = (
            f"POST {_path('apps', app, 'dynos', dyno, 'actions', 'exec')} HTTP/1.1\r\nHost: localhost\r\n"
            f"Connection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        return _upgrade(_connect_attach(self.socket_path, self.timeout), head + payload)

    # --- the dyno lifecycle: app features (preboot) and the web health check ---------------------

    def list_features(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "features"))

    def get_feature(self, app: str, name: str) -> Json:
        return self.request("GET", _path("apps", app, "features", name))

    def set_feature(self, app: str, name: str, enabled: bool) -> Json:
        return self.request("PATCH", _path("apps", app, "features", name), {"enabled": enabled})

    def get_health_check(self, app: str) -> Json:
        return self.request("GET", _path("apps", app, "health-check"))

    def set_health_check(self, app: str, check: Json) -> Json:
        return self.request("PUT", _path("apps", app, "health-check"), check)

    def remove_health_check(self, app: str) -> None:
        self.request("DELETE", _path("apps", app, "health-check"))

    # --- logs -----------------------------------------------------------------------------------

    def log_lines(self, app: str, lines: int = 100, ps: str | None = None, source: str | None = None,
                  ) -> list[str]:
        """The last ``lines`` log lines, newest last."""
        from urllib.parse import urlencode

        connection = self._new_connection()
        path = _path("apps", app, "logs") + "?" + urlencode(_log_query(lines, ps, source, tail=False))
        try:
            response = self._send(connection, "GET", path, None, {})
            data = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            raise _error_from(response.status, response.reason, data)
        return data.decode("utf-8", "replace").splitlines()

    def tail_logs(self, app: str, lines: int = 100, ps: str | None = None, source: str | None = None,
                  ) -> Generator[str, None, None]:
        """The last ``lines`` lines, then every new one as it is logged; runs until closed."""
        return self._stream("GET", _path("apps", app, "logs"), query=_log_query(lines, ps, source, tail=True))

    def list_drains(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "log-drains"))

    def add_drain(self, app: str, url: str) -> Json:
        return self.request("POST", _path("apps", app, "log-drains"), {"url": url})

    def remove_drain(self, app: str, url_or_id: str) -> None:
        self.request("DELETE", _path("apps", app, "log-drains", url_or_id))

    # --- add-ons (docs/addons.md) ----------------------------------------------------------------

    def list_addons(self, app: str | None = None) -> list[Json]:
        return self.request("GET", _path("apps", app, "addons") if app else "/addons")

    def create_addon(self, app: str, plan: str, *, attachment: str | None = None, name: str | None = None
                     ) -> Json:
        body: Json = {"plan": plan}
        if attachment:
            body["attachment"] = {"name": attachment}
        if name:
            body["name"] = name
        return self.request("POST", _path("apps", app, "addons"), body)

    def get_addon(self, name: str, app: str | None = None) -> Json:
        return self.request("GET", _path("apps", app, "addons", name) if app else _path("addons", name))

    def destroy_addon(self, app: str, name: str, *, force: bool = False, final_backup: bool = True) -> Json:
        return self.request("DELETE", _path("apps", app, "addons", name), {"force": force,
                                                                          "final_backup": final_backup})

    def change_addon_plan(self, app: str, name: str, plan: str) -> Json:
        return self.request("PATCH", _path("apps", app, "addons", name), {"plan": plan})

    def list_attachments(self, app: str | None = None) -> list[Json]:
        return self.request("GET", _path("apps", app, "addon-attachments") if app else "/addon-attachments")

    def attach_addon(self, addon: str, app: str, name: str | None = None) -> Json:
        body: Json = {"addon": addon, "app": app}
        if name:
            body["name"] = name
        return self.request("POST", "/addon-attachments", body)

    def detach_addon(self, app: str, attachment: str) -> Json:
        return self.request("DELETE", _path("apps", app, "addon-attachments", attachment))

    def list_addon_services(self) -> list[Json]:
        return self.request("GET", "/addon-services")

    def list_addon_plans(self, service: str) -> list[Json]:
        return self.request("GET", _path("addon-services", service, "plans"))

    def pg(self, app: str, action: str, payload: Json) -> Any:
        """pg:credentials:rotate, pg:reset, pg:ps, pg:kill (action: credentials-rotate, reset, ps, kill)."""
        return self.request("POST", _path("apps", app, "pg-actions", action), payload)

    def pg_backups(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "pg-backups"))

    def pg_backup_capture(self, app: str, database: str | None = None) -> Json:
        return self.request("POST", _path("apps", app, "pg-backups"), {"database": database})

    def pg_backup_restore(self, app: str, backup: str | None = None, database: str | None = None) -> Json:
        return self.request("POST", _path("apps", app, "pg-backups", "restores"), {"backup": backup,
                                                                                 "database": database})

    def pg_backup_delete(self, app: str, backup: str) -> None:
        self.request("DELETE", _path("apps", app, "pg-backups", backup))

    def pg_backup_schedules(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "pg-backups", "schedules"))

    def pg_backup_schedule(self, app: str, at: str, database: str | None = None) -> Json:
        return self.request("PUT", _path("apps", app, "pg-backups", "schedules"), {"at": at, "database": database})

    def pg_backup_unschedule(self, app: str, database: str | None = None) -> None:
        self.request("DELETE", _path("apps", app, "pg-backups", "schedules"), {"database": database})

    def pg_backup_download(self, app: str, backup: str | None, out: BinaryIO) -> int:
        """Write the backup's dump (the latest completed one for None) to ``out``; its size."""
        import http.client

        connection = self._new_connection()
        try:
            response = self._send(connection, "GET", _path("apps", app, "pg-backups", backup or "latest", "download"),
                                  None, {})
            if response.status >= 400:
                raise _error_from(response.status, response.reason, response.read())
            size = 0
            try:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    size += len(chunk)
            except http.client.IncompleteRead:
                raise UserError("The download from dynod ended in the middle; try again.", status=502,
                                code="stream_broken") from None
            return size
        finally:
            connection.close()

    def redis_command(self, app: str, argv: list[str], addon: str | None = None) -> Json:
        return self.request("POST", _path("apps", app, "redis-commands"), {"argv": argv, "addon": addon})

    # --- domains and certificates ---------------------------------------------------------------

    def list_domains(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "domains"))

    def add_domain(self, app: str, hostname: str) -> Json:
        return self.request(
            "POST", _path("apps", app, "domains"), {"hostname": hostname})

    def remove_domain(self, app: str, hostname: str) -> None:
        self.request("DELETE", _path("apps", app, "domains", hostname))

    def list_certs(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "sni-endpoints"))

    # Automated Certificate Management (certs:auto): each returns {"enabled", "domains": [...]}.
    def acm_status(self, app: str) -> Json:
        return self.request("GET", _path("apps", app, "acm"))

    def acm_enable(self, app: str) -> Json:
        return self.request("POST", _path("apps", app, "acm"))

    def acm_disable(self, app: str) -> Json:
        return self.request("DELETE", _path("apps", app, "acm"))

    def acm_refresh(self, app: str) -> Json:
        return self.request("PATCH", _path("apps", app, "acm", "refresh"))

    def add_cert(self, app: str, domain: str, cert_pem: str, key_pem: str) -> Json:
        payload = {"domain": domain, "certificate_chain": cert_pem, "private_key": key_pem}
        return self.request("POST", _path("apps", app, "sni-endpoints"), payload)

    # --- stacks and the daemon ------------------------------------------------------------------

    def list_stacks(self) -> list[Json]:
        return self.request("GET", "/stacks")

    def build_stack(self, name: str, progress: Callable[[str], None]) -> Json:
        """Build a stack, passing each progress line to ``progress``; returns the stack."""
        import json

        previous: str | None = None
        for line in self._stream("POST", _path("stacks", name, "actions", "build")):
            # The last line is the JSON outcome: hold each line back until the next one arrives.
            if previous is not None:
                progress(previous)
            previous = line
        try:
            outcome = json.loads(previous or "")
        except ValueError:
            outcome = None
        if not isinstance(outcome, dict) or not ("stack" in outcome or "error" in outcome):
            if previous is not None:
                progress(previous)
            raise UserError(f"The build of stack {name} ended without a result; see dynod's log.",
                            status=502, code="stream_broken")
        if "error" in outcome:
            error = outcome["error"]
            raise UserError(str(error.get("message")), code=str(error.get("id", "error")))
        return outcome["stack"]

    # --- metrics and the dashboard ----------------------------------------------------------------

    def get_metrics(self, app: str, type: str = "web", since: str = "1h") -> Json:
        return self.request("GET", _path("apps", app, "metrics"), query={"type": type, "since": since})

    def dashboard_url(self) -> str:
        return self.request("GET", "/dashboard-url")["url"]

    # --- the scheduler and autoscaling (docs/scheduler.md, docs/autoscaling.md) --------------------

    def list_jobs(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "scheduler", "jobs"))

    def add_job(self, app: str, schedule: str, command: str, *, size: str | None = None,
                catch_up: bool = True) -> Json:
        payload: Json = {"schedule": schedule, "command": command, "catch_up": catch_up}
        if size:
            payload["size"] = size
        return self.request("POST", _path("apps", app, "scheduler", "jobs"), payload)

    def remove_job(self, app: str, job: str) -> Json:
        return self.request("DELETE", _path("apps", app, "scheduler", "jobs", job))

    def get_autoscale(self, app: str) -> list[Json]:
        return self.request("GET", _path("apps", app, "autoscale"))

    def enable_autoscale(self, app: str, type: str, *, minimum: int, maximum: int, p95: str) -> Json:
        return self.request("PUT", _path("apps", app, "autoscale", type), {"min": minimum, "max": maximum, "p95": p95})

    def disable_autoscale(self, app: str, type: str) -> None:
        self.request("DELETE", _path("apps", app, "autoscale", type))

    def status(self) -> Json:
        return self.request("GET", "/status")

    def shutdown(self, stop_dynos: bool = False) -> None:
        self.request("POST", "/shutdown", {"stop_dynos": stop_dynos})


def _log_query(lines: int, ps: str | None, source: str | None, *, tail: bool) -> dict[str, str]:
    query = {"lines": str(lines)}
    if tail:
        query["tail"] = "true"
    if ps:
        query["ps"] = ps
    if source:
        query["source"] = source
    return query


def _upgrade(sock: _socket.socket, request: bytes) -> AttachSession:
    """Send an Upgrade request on ``sock``: the attach session on 101, else the API's error."""
    try:
        sock.sendall(request)
        status, reason, headers, rest = _read_response_head(sock)
        if status == 101:
            return AttachSession(sock, rest)
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                break
            rest += data
        raise _error_from(status, reason, rest[:length])
    except OSError as exc:
        sock.close()
        raise _lost(exc) from None
    except BaseException:
        sock.close()
        raise


def _read_response_head(sock: _socket.socket) -> tuple[int, str, dict[str, str], bytes]:
    """Status, reason, headers (lower-case names) and the bytes already read past the head.

    Hand-written because http.client's reader buffers past the 101 and cannot hand those bytes
    back; the head it must read is one status line and a few headers from our own server.
    """
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise _broken("dynod closed the connection without answering; see its log.")
        buffer += data
        if len(buffer) > MAX_RESPONSE_HEAD:
            raise _broken("dynod's answer has an oversized head.")
    head, rest = buffer.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise _broken(f"dynod's answer is not HTTP: {status_line[:60]!r}.")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, rest


class AttachSession:
    """The client end of an attached one-off dyno: frames over a non-blocking socket.

    ``send_stdin``/``close_stdin``/``resize`` queue frames; ``flush`` writes what the socket takes
    now; ``receive`` returns the frames that have arrived (None at end of stream). A caller with
    a terminal (dynoctl run) drives these from its own select loop; ``communicate`` does it for a
    program that just wants the output and the exit code.
    """

    def __init__(self, sock: _socket.socket, already_received: bytes = b"") -> None:
        self.sock = sock
        sock.setblocking(False)
        self._decoder = FrameDecoder()
        self._outgoing = bytearray()
        self._ready: list[Frame] = self._feed(already_received)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AttachSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _feed(self, data: bytes) -> list[Frame]:
        try:
            return self._decoder.feed(data)
        except AttachProtocolError as exc:
            raise _broken(f"dynod sent a broken attach stream: {exc}.") from None

    # outgoing

    def send_stdin(self, data: bytes) -> None:
        self._outgoing += encode_data(FrameType.STDIN, data)

    def close_stdin(self) -> None:
        self._outgoing += encode_frame(FrameType.STDIN_EOF)

    def resize(self, rows: int, cols: int) -> None:
        self._outgoing += encode_resize(rows, cols)

    @property
    def queued(self) -> int:
        """Bytes of frames not yet written to the socket."""
        return len(self._outgoing)

    def flush(self) -> None:
        while self._outgoing:
            try:
                sent = self.sock.send(self._outgoing)
            except BlockingIOError:
                return
            except (BrokenPipeError, ConnectionResetError):
                # dynod stopped reading (the dyno ended or failed): what it said last is still
                # waiting to be read, so drop the input and let the reading side report.
                self._outgoing.clear()
                return
            except OSError as exc:
                if _tls_would_block(exc):
                    return
                raise _lost(exc) from None
            del self._outgoing[:sent]

    # incoming

    def receive(self) -> list[Frame] | None:
        """Frames that arrived (possibly none); None once the server closed the stream."""
        if self._ready:
            frames, self._ready = self._ready, []
            return frames
        try:
            data = self.sock.recv(256 * 1024)
            # Over TLS, bytes already decrypted wait inside the socket object where select cannot
            # see them: take them all now, or the loop would sleep on a frame that has arrived.
            pending = getattr(self.sock, "pending", None)
            while pending is not None and data and pending():
                data += self.sock.recv(pending())
        except BlockingIOError:
            return []
        except OSError as exc:
            if _tls_would_block(exc):
                return []
            raise _lost(exc) from None
        if not data:
            if self._decoder.pending:
                raise _broken("The attach stream from dynod ended in the middle of a frame.")
            return None
        return self._feed(data)

    @property
    def has_ready_frames(self) -> bool:
        """Frames already decoded (they arrived with the 101): handle them before waiting."""
        return bool(self._ready)

    def communicate(self, stdin: bytes = b"", on_output: Callable[[FrameType, bytes], None] | None = None,
                    ) -> int:
        """Send ``stdin`` then EOF, pass each output chunk to ``on_output``, return the exit code."""
        self.send_stdin(stdin)
        self.close_stdin()
        while True:
            self.flush()
            if not self.has_ready_frames:
                writers = [self.sock] if self.queued else []
                select.select([self.sock], writers, [])
            frames = self.receive()
            if frames is None:
                raise _broken("dynod closed the attach stream before the dyno exited; see its log.")
            for frame in frames:
                code = handle_server_frame(frame, on_output)
                if code is not None:
                    return code


def _tls_would_block(exc: OSError) -> bool:
    # ssl.SSLWantReadError / SSLWantWriteError, named without importing ssl: the socket path
    # never loads it (dynoctl run's start-up cost).
    return type(exc).__name__ in ("SSLWantReadError", "SSLWantWriteError")


def handle_server_frame(frame: Frame, on_output: Callable[[FrameType, bytes], None] | None) -> int | None:
    """Apply one frame from the server: output goes to ``on_output``; EXIT returns the code."""
    if frame.type in (FrameType.STDOUT, FrameType.STDERR):
        if on_output is not None:
            on_output(frame.type, frame.payload)
        return None
    if frame.type == FrameType.EXIT:
        try:
            return decode_exit(frame.payload)
        except AttachProtocolError as exc:
            raise _broken(f"dynod sent a broken exit frame: {exc}.") from None
    if frame.type == FrameType.ERROR:
        raise UserError(frame.payload.decode("utf-8", "replace"), status=500, code="attach_error")
    raise _broken(f"dynod sent an unexpected {FRAME_NAMES.get(frame.type, frame.type)} frame.")
