"""The control API server: HTTP/1.1 + JSON over a unix socket, h11 on trio.

h11 is the sans-I/O HTTP/1.1 library the Python field builds on (httpx's httpcore and hypercorn
use it): it turns bytes into events and events into bytes and we do the reading and writing, so
the HTTP rules (keep-alive, chunked bodies, the 101 upgrade) are h11's, tested there, and this
module stays a thin trio adapter. Routing and validation live in ``routes.py``.

Rules kept here:
- the socket is mode 0660 root:<group> when the group exists, else 0600, and is never reachable
  with looser permissions: it is bound under a temporary name, chmod/chown'ed, then renamed in;
- a stale socket (nobody accepting) is replaced; a live one is a UserError, never stolen;
- each connection is its own task; keep-alive; a handler's non-UserError is logged and answered
  500 ``internal_error``, and never takes the server down.
"""

from __future__ import annotations

import errno
import grp
import http
import json
import logging
import math
import os
import socket as stdlib_socket
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from ..errors import UserError
from .attach import (
    FRAME_NAMES,
    UPGRADE_TOKEN,
    AttachProtocolError,
    FrameDecoder,
    FrameType,
    decode_resize,
    encode_data,
    encode_error,
    encode_exit,
)
from .rendezvous import looks_like_rendezvous
from .routes import (
    ApiRoutes,
    AttachResponse,
    JsonResponse,
    Request,
    StreamResponse,
    TextResponse,
)
from .service import AttachedDyno, PlatformService

log = logging.getLogger("dynod.api")

RECEIVE_SIZE = 64 * 1024
SERVER_HEADER = ("server", "dynod")
# A killed dyno's kill() must finish even while dynod is being cancelled, but not hang it.
KILL_TIMEOUT = 10.0
# After an error answer to a request whose body was not read: how long and how much of the rest
# is read and dropped before the connection closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
# The TCP+TLS listener's bounds (docs/api.md, "Remote access").
HANDSHAKE_SECONDS = 10.0  # the TLS handshake and the first bytes of the first request
MAX_TLS_CONNECTIONS = 256
# A TCP client that sends nothing of a request (head or body) for this long is hung up on, so a
# slow-loris cannot hold the listener's connections; answers that stream (log tails) are not reads.
IDLE_SECONDS = 60.0


async def serve_api(
    platform: PlatformService,
    socket_path: Path,
    *,
    group: str = "dynod",
    routes: ApiRoutes | None = None,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the control API on ``socket_path`` until cancelled; reports the path once listening.

    ``routes`` replaces the plain table (dynod/api/platform_api.py adds users and tokens to it)."""
    socket_path = Path(socket_path)
    sock = await _bind_socket(socket_path, group)
    inode = os.stat(socket_path).st_ino
    routes = routes if routes is not None else ApiRoutes(platform)
    try:
        async with trio.open_nursery() as nursery:
            listener = trio.SocketListener(sock)
            await nursery.start(trio.serve_listeners, partial(_serve_connection, routes), [listener])
            log.info("API listening on %s", socket_path)
            task_status.started(socket_path)
    finally:
        _remove_if_ours(socket_path, inode)


async def serve_api_tcp(
    routes: ApiRoutes,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The same connections on a TCP listener (the dashboard's, dynod/dashboard/listener.py):
    ``routes`` is then the one that checks who may do what. Reports (host, port) once listening."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_serve_connection, routes), listeners)
        log.info("API (dashboard) listening on %s port %s", host, port)
        task_status.started(listeners[0].socket.getsockname()[:2])


async def serve_api_tls(
    routes: ApiRoutes,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    max_connections: int = MAX_TLS_CONNECTIONS,
    idle_timeout: float = IDLE_SECONDS,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The API over TCP with TLS (``[api] listen``); ``routes`` authenticates every request.

    Open to the network, so bounded: a TLS handshake must finish within HANDSHAKE_SECONDS, and
    past ``max_connections`` at once a new connection is closed at once rather than queued (a
    client retries; a flood cannot starve the event loop of file descriptors)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    slots = trio.Semaphore(max_connections)

    async def serve(stream: trio.SocketStream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await stream.aclose()
            return
        try:
            tls = trio.SSLStream(stream, ssl_context, server_side=True, https_compatible=True)
            with trio.move_on_after(HANDSHAKE_SECONDS) as scope:
                try:
                    await tls.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    scope.cancel()
                first = b""
                if not scope.cancelled_caught:
                    first = await tls.receive_some(RECEIVE_SIZE)
            if scope.cancelled_caught or not first:
                await trio.aclose_forcefully(stream)
                return
            rendezvous = getattr(routes, "rendezvous", None)
            if rendezvous is not None and looks_like_rendezvous(first):
                await rendezvous.serve(tls, first)  # a Platform API client's attach (rendezvous.py)
                return
            await _serve_connection(routes, tls, already=first,  # type: ignore[arg-type]  # no half-close
                                    idle_timeout=idle_timeout)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.aclose_forcefully(stream)  # a failed handshake, a client gone
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        if getattr(routes, "rendezvous", None) is not None:
            nursery.start_soon(routes.rendezvous.reap)  # type: ignore[attr-defined]
        await nursery.start(trio.serve_listeners, serve, listeners)
        bound = listeners[0].socket.getsockname()[:2]
        log.info("API (TLS) listening on %s port %s", *bound)
        task_status.started(bound)


# --- the socket file ------------------------------------------------------------------------------------


async def _bind_socket(path: Path, group: str) -> trio.socket.SocketType:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_socket(path)
    try:
        gid: int | None = grp.getgrnam(group).gr_gid
    except KeyError:
        gid = None
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(str(temporary))
        # Not listening yet, so nobody can connect before the mode is right.
        os.chmod(temporary, 0o660 if gid is not None else 0o600)
        if gid is not None:
            os.chown(temporary, -1, gid)
        os.rename(temporary, path)
        sock.listen(128)
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    return sock


def _clear_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UserError(f"{path} exists and is not a socket: remove it or point run_dir elsewhere.")
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # left behind by a dynod that died: nobody is accepting
        return
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.ETIMEDOUT):
            raise
    finally:
        probe.close()
    raise UserError(f"Another dynod is already serving the API on {path}: stop it first.")


def _remove_if_ours(path: Path, inode: int) -> None:
    # A newer dynod may already have replaced the file; only remove the one we made.
    try:
        if path.lstat().st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


# --- one connection ---------------------------------------------------------------------------------


class _Connection:
    """h11 state plus the trio stream it speaks over."""

    def __init__(self, stream: trio.abc.HalfCloseableStream, idle_timeout: float = math.inf) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER)
        self.idle_timeout = idle_timeout

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_after(self.idle_timeout) as idle:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                if idle.cancelled_caught:
                    if self.h11.their_state is h11.SEND_BODY:  # mid-body: answer why, then close
                        raise UserError(f"The request body stalled for {self.idle_timeout:.0f} s.", status=408,
                                        code="request_timeout")
                    raise trio.ClosedResourceError("the client sent nothing for too long")
                self.h11.receive_data(data)
                continue
            return event

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)


class _Body:
    """The request body, read on demand from the connection (implements routes.RequestBody)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            event = await self._connection.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                self.complete = True
            else:
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} inside a request body")

    def finish_if_buffered(self) -> None:
        """Consume the rest of the body if it is already here (an empty GET body always is)."""
        while not self.complete:
            event = self._connection.h11.next_event()
            if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                self.complete = True
            elif not isinstance(event, h11.Data):
                return  # NEED_DATA: more is on its way; the connection will close instead

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise UserError(f"The request body is over {limit} bytes; JSON requests are small.",
                                status=413, code="request_too_large")
            parts.append(chunk)
        return b"".join(parts)


async def _serve_connection(routes: ApiRoutes, stream: trio.abc.HalfCloseableStream, *, already: bytes = b"",
                            idle_timeout: float = math.inf) -> None:
    connection = _Connection(stream, idle_timeout)
    if already:
        connection.h11.receive_data(already)
    try:
        while True:
            event = await connection.next_event()
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            keep_going = await _answer(routes, connection, event)
            if not keep_going or connection.h11.our_state is not h11.DONE \
                    or connection.h11.their_state is not h11.DONE:
                return
            connection.h11.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client hung up; nothing to answer
    except h11.RemoteProtocolError as exc:
        if connection.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                payload = {"id": "bad_request", "message": f"Malformed HTTP request: {exc}."}
                await _send_json(connection, exc.error_status_hint, payload, close=True)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
                pass
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _to_request(event: h11.Request, body: _Body) -> Request:
    target = urlsplit(event.target.decode("ascii", "replace"))
    return Request(
        method=event.method.decode("ascii", "replace").upper(),
        path=target.path,
        query=dict(parse_qsl(target.query)),
        headers={name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers},
        body=body,
    )


async def _answer(routes: ApiRoutes, connection: _Connection, event: h11.Request) -> bool:
    """Answer one request; False when the connection must close afterwards."""
    body = _Body(connection)
    request = _to_request(event, body)
    try:
        response = await routes.dispatch(request)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an answer, never a dead server
        user_error = _user_error(exc)
        if user_error is None:
            log.exception("API %s %s failed", request.method, request.path)
            status, payload = 500, {"id": "internal_error",
                                    "message": f"dynod failed on {request.method} {request.path} "
                                               f"({type(exc).__name__}); see dynod's log."}
        else:
            status, payload = user_error.status, {"id": user_error.code, "message": str(user_error)}
        # Unread body bytes would be taken for the next request: close rather than drain a slug.
        body.finish_if_buffered()
        await _send_json(connection, status, payload, close=not body.complete)
        if not body.complete:
            await _linger(connection.stream)
        return body.complete

    if not body.complete:
        # The handler did not read the body (GET with a body, say): finish it so keep-alive works.
        async for _ in body.chunks():
            pass
    if isinstance(response, JsonResponse):
        await _send_json(connection, response.status, response.body, headers=getattr(response, "headers", ()))
        if response.after is not None:
            await response.after()
        return True
    if isinstance(response, TextResponse):
        data = response.text.encode("utf-8", "replace")
        await connection.send(h11.Response(status_code=response.status, reason=_reason(response.status), headers=[
            SERVER_HEADER, ("content-type", response.content_type), ("content-length", str(len(data)))]))
        await connection.send(h11.Data(data=data))
        await connection.send(h11.EndOfMessage())
        return True
    if isinstance(response, StreamResponse):
        await _stream(connection, response)
        return False
    return await _attach(connection, response)


async def _linger(stream: trio.abc.HalfCloseableStream) -> None:
    """Read and drop what the client still sends (bounded), so it reads the answer, not a reset.

    Closing a socket with unread data resets the connection, and a client still writing its
    body (any HTTP client sends it all before reading) would see that instead of the 413.
    """
    with trio.move_on_after(LINGER_SECONDS):
        if hasattr(stream, "send_eof"):  # a TLS stream has no half-close
            await stream.send_eof()
        dropped = 0
        while dropped < LINGER_BYTES and (data := await stream.receive_some(RECEIVE_SIZE)):
            dropped += len(data)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _user_error(exc: BaseException) -> UserError | None:
    # The platform's own nurseries may wrap a UserError in an ExceptionGroup.
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        errors = [_user_error(inner) for inner in exc.exceptions]
        if errors and all(e is not None for e in errors):
            return errors[0]
    return None


async def _send_json(connection: _Connection, status: int, payload: object, *, close: bool = False,
                     headers: tuple[tuple[str, str], ...] = ()) -> None:
    headers = (SERVER_HEADER, *headers)
    if close:
        headers += (("connection", "close"),)
    if status in (204, 304):  # neither may carry a body
        await connection.send(h11.Response(status_code=status, headers=list(headers), reason=_reason(status)))
        await connection.send(h11.EndOfMessage())
        return
    data = json.dumps(payload).encode() + b"\n"
    headers += (("content-type", "application/json"), ("content-length", str(len(data))))
    await connection.send(h11.Response(status_code=status, headers=list(headers), reason=_reason(status)))
    await connection.send(h11.Data(data=data))
    await connection.send(h11.EndOfMessage())


async def _stream(connection: _Connection, response: StreamResponse) -> None:
    # No content-length: h11 sends chunked to HTTP/1.1 clients. The connection closes after a
    # stream, so whatever the client sends meanwhile is only watched for its hang-up.
    await connection.send(h11.Response(status_code=200, reason=b"OK", headers=[
        SERVER_HEADER, ("content-type", response.content_type), ("connection", "close")]))

    async def write(data: bytes) -> None:
        await connection.send(h11.Data(data=data))

    finished = False
    async with trio.open_nursery() as nursery:
        if response.stop_when_client_leaves:
            nursery.start_soon(_cancel_on_hangup, connection.stream, nursery.cancel_scope)
        try:
            await response.produce(write)
            finished = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up mid-write
        except Exception:  # noqa: BLE001 - the 200 is sent; a cut chunked body is the only signal left
            log.exception("API stream failed")
        nursery.cancel_scope.cancel()
    if finished:
        try:
            await connection.send(h11.EndOfMessage())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _cancel_on_hangup(stream: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
    try:
        while await stream.receive_some(RECEIVE_SIZE):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


# --- attach -------------------------------------------------------------------------------------------


async def _attach(connection: _Connection, response: AttachResponse) -> bool:
    dyno = response.dyno
    try:
        await connection.send(h11.InformationalResponse(status_code=101, reason=b"Switching Protocols", headers=[
            SERVER_HEADER, ("connection", "upgrade"), ("upgrade", UPGRADE_TOKEN)]))
    except BaseException:
        await _kill(dyno)
        raise
    trailing, _closed = connection.h11.trailing_data
    await pump_attached(connection.stream, dyno, bytes(trailing))
    return False


async def pump_attached(stream: trio.abc.Stream, dyno: AttachedDyno, already_received: bytes = b"") -> None:
    """Carry frames between an upgraded connection and an attached dyno until it exits.

    The dyno's output goes out as STDOUT/STDERR frames and its exit code as the last frame
    (EXIT); STDIN, STDIN_EOF and RESIZE frames go to the dyno. When the client goes away first,
    the dyno is killed: a one-off nobody watches is never left behind.
    """
    decoder = FrameDecoder()
    exited = False
    failure: str | None = None

    async def output(scope: trio.CancelScope) -> None:
        nonlocal exited
        while (chunk := await dyno.receive()) is not None:
            kind, data = chunk
            type = FrameType.STDERR if kind == "stderr" else FrameType.STDOUT
            await stream.send_all(encode_data(type, data))
        code = await dyno.wait()
        exited = True
        await stream.send_all(encode_exit(code))
        scope.cancel()

    async def apply(data: bytes) -> None:
        for frame in decoder.feed(data):
            if frame.type == FrameType.STDIN:
                await dyno.send_stdin(frame.payload)
            elif frame.type == FrameType.STDIN_EOF:
                await dyno.close_stdin()
            elif frame.type == FrameType.RESIZE:
                await dyno.resize(*decode_resize(frame.payload))
            else:
                raise AttachProtocolError(f"a client may not send {FRAME_NAMES.get(frame.type, frame.type)} frames")

    async def input(scope: trio.CancelScope) -> None:
        await apply(already_received)
        while data := await stream.receive_some(RECEIVE_SIZE):
            await apply(data)
        scope.cancel()  # the client hung up

    async def guarded(task: Callable[[trio.CancelScope], Awaitable[None]], scope: trio.CancelScope) -> None:
        nonlocal failure
        try:
            await task(scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()
        except AttachProtocolError as exc:
            failure = f"Attach protocol error: {exc}."
            scope.cancel()
        except UserError as exc:
            failure = str(exc)
            scope.cancel()
        except Exception as exc:  # noqa: BLE001 - report it to the client and kill the dyno
            log.exception("attached dyno %s failed", dyno.name)
            failure = f"dynod lost {dyno.name} ({type(exc).__name__}); see dynod's log."
            scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, output, nursery.cancel_scope)
            nursery.start_soon(guarded, input, nursery.cancel_scope)
    finally:
        if not exited:
            await _kill(dyno)
            if failure is not None:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    try:
                        await stream.send_all(encode_error(failure))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass


async def _kill(dyno: AttachedDyno) -> None:
    with trio.move_on_after(KILL_TIMEOUT) as scope:
        scope.shield = True
        try:
            await dyno.kill()
        except Exception:  # noqa: BLE001 - the dyno may already be gone; log, do not mask the cause
            log.exception("killing %s failed", dyno.name)
