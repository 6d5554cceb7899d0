"""Heroku's rendezvous protocol: how a Platform API client attaches its terminal to a one-off dyno.

``POST /apps/{app}/dynos`` with ``"attach": true`` starts the dyno and answers its
``attach_url``, ``rendezvous://HOST:PORT/SECRET``. The client then opens TLS to HOST:PORT, writes
SECRET (Heroku's CLI adds ``\\r\\n``; heroku3 does not), reads ``rendezvous\\r\\n``, and from then on
the connection is the dyno's terminal: bytes written are its stdin, bytes read its stdout and
stderr, and the server closes the connection when the dyno exits. dynod serves it on the API's
own TLS port: after the handshake the first bytes tell the two apart, because a secret is
lowercase hex and an HTTP request starts with an upper-case method.

A session is used once and lives ``SESSION_SECONDS``: a dyno nobody attaches to in that time is
killed (``reap``), as is a dyno whose client goes away before it exits.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import trio

from .service import AttachedDyno

log = logging.getLogger("dynod.api")

SECRET_BYTES = 32
SECRET_LEN = SECRET_BYTES * 2  # hex
SESSION_SECONDS = 60.0
MAX_SESSIONS = 256
HELLO = b"rendezvous\r\n"
RECEIVE = 64 * 1024
KILL_TIMEOUT = 10.0


def looks_like_rendezvous(first: bytes) -> bool:
    """A rendezvous secret starts with a lowercase hex digit; an HTTP request with its method."""
    return bool(first) and first[:1] in b"0123456789abcdef"


@dataclass(slots=True)
class _Session:
    dyno: AttachedDyno
    expires: float


class Rendezvous:
    """The one-off dynos waiting for their client, by secret."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def add(self, dyno: AttachedDyno) -> str:
        if len(self._sessions) >= MAX_SESSIONS:
            from ..errors import UserError

            raise UserError("Too many one-off dynos wait for their terminal: attach to them or wait a minute.",
                            status=429, code="rate_limit")
        secret = secrets.token_hex(SECRET_BYTES)
        self._sessions[secret] = _Session(dyno, time.monotonic() + SESSION_SECONDS)
        return secret

    def take(self, secret: str) -> AttachedDyno | None:
        """The dyno waiting under ``secret`` (once); None for an unknown or expired secret."""
        session = self._sessions.get(secret)
        if session is None or session.expires < time.monotonic():
            return None  # an expired one stays for reap() to kill
        del self._sessions[secret]
        return session.dyno

    async def reap(self) -> None:
        """Kill the dynos nobody attached to in time; runs for as long as the listener."""
        while True:
            await trio.sleep(5)
            now = time.monotonic()
            for secret in [s for s, session in self._sessions.items() if session.expires < now]:
                await _kill(self._sessions.pop(secret).dyno)

    async def serve(self, stream: trio.abc.Stream, first: bytes) -> None:
        """One client connection whose first bytes were ``first``."""
        data = first
        with trio.move_on_after(10):
            while len(data) < SECRET_LEN and (more := await stream.receive_some(RECEIVE)):
                data += more
        secret, rest = data[:SECRET_LEN].decode("ascii", "replace"), data[SECRET_LEN:]
        rest = rest.removeprefix(b"\r\n").removeprefix(b"\n")
        # A dict lookup by a 256-bit random secret: nothing to learn from its timing.
        dyno = self.take(secret)
        if dyno is None:
            await trio.aclose_forcefully(stream)
            return
        await pump(stream, dyno, rest)


async def pump(stream: trio.abc.Stream, dyno: AttachedDyno, already: bytes) -> None:
    """Carry raw bytes between the client and the dyno until it exits; kill it if the client leaves."""
    exited = False

    async def output(scope: trio.CancelScope) -> None:
        nonlocal exited
        while (chunk := await dyno.receive()) is not None:
            await stream.send_all(chunk[1])
        await dyno.wait()
        exited = True
        scope.cancel()

    async def input(scope: trio.CancelScope) -> None:
        if already:
            await dyno.send_stdin(already)
        while data := await stream.receive_some(RECEIVE):
            await dyno.send_stdin(data)
        await dyno.close_stdin()  # the client's stdin ended; its output may still come

    async def guarded(task, scope: trio.CancelScope) -> None:  # type: ignore[no-untyped-def]
        try:
            await task(scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()
        except Exception:  # noqa: BLE001 - the dyno is killed below; the log says why
            log.exception("rendezvous with %s failed", dyno.name)
            scope.cancel()

    try:
        await stream.send_all(HELLO)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, output, nursery.cancel_scope)
            nursery.start_soon(guarded, input, nursery.cancel_scope)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        if not exited:
            await _kill(dyno)
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await trio.aclose_forcefully(stream)


async def _kill(dyno: AttachedDyno) -> None:
    with trio.move_on_after(KILL_TIMEOUT) as scope:
        scope.shield = True
        try:
            await dyno.kill()
        except Exception:  # noqa: BLE001 - the dyno may already be gone
            log.exception("killing %s failed", dyno.name)
