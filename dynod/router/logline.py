"""The one line per request the router writes into an app's log, in Heroku's router format. No I/O.

Heroku: `at=info method=GET path="/" host=myapp.herokuapp.com request_id=... fwd="1.2.3.4" dyno=web.1
connect=1ms service=18ms status=200 bytes=13 protocol=https`; errors put `code=H12 desc="Request
timeout"` after `at=error`, and leave dyno/connect/service empty when no dyno was reached.
"""

from __future__ import annotations

import re
from json.encoder import encode_basestring_ascii

from .codes import RouterCode


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{round(seconds * 1000)}ms"


def access_line(*, method: str, path: str, host: str, request_id: str, fwd: str, dyno: str,
                connect: float | None, service: float | None, status: int, nbytes: int | None,
                protocol: str, code: RouterCode | None = None) -> str:
    """Format one router log line; times in seconds, shown as Heroku's whole milliseconds."""
    if code is None:
        prefix = "at=info "
    else:
        prefix = f"at={code.level} code={code.code} desc={_quoted(code.desc)} "
    return (f"{prefix}method={method} path={_quoted(path)} host={host} request_id={request_id} "
            f"fwd={_quoted(fwd)} dyno={dyno} connect={_ms(connect)} service={_ms(service)} "
            f"status={status} bytes={'' if nbytes is None else nbytes} protocol={protocol}")


# Bytes that need no escaping inside a Heroku-quoted value nor inside a JSON string: printable ASCII
# but for the quote and the backslash.
_NEEDS_ESCAPING = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_WIRE_INFO = (b'{"type":"log","app":%s,"line":"at=info method=%s path=\\"%s\\" host=%s request_id=%s '
              b'fwd=\\"%s\\" dyno=%s connect=%s service=%s status=%d bytes=%d protocol=%s"}\n')


def _ms_bytes(seconds: float | None) -> bytes:
    return b"" if seconds is None else b"%dms" % round(seconds * 1000)


# One request's log line, unformatted: (app, method, path, host, request_id, fwd, dyno, connect,
# service, status, nbytes, protocol, code). The worker formats it when it sends its batch.
AccessRecord = tuple[str, bytes, bytes, bytes, bytes, bytes, bytes, float | None, float | None, int, int | None,
                     bytes, RouterCode | None]


def access_message(app: str, method: bytes, path: bytes, host: bytes, request_id: bytes, fwd: bytes,
                   dyno: bytes, connect: float | None, service: float | None, status: int, nbytes: int | None,
                   protocol: bytes, code: RouterCode | None) -> bytes:
    """The worker's wire message for one access line: exactly wire.encode({"type": "log", "app": app,
    "line": access_line(...)}) with the byte fields read as latin-1, built in one step when nothing
    in the line needs escaping (the usual request), else through access_line and the JSON encoder.
    """
    search = _NEEDS_ESCAPING.search
    if (code is None and nbytes is not None and not search(path) and not search(host)
            and not search(request_id) and not search(method) and not search(dyno)):
        return _WIRE_INFO % (encode_basestring_ascii(app).encode(), method, path, host, request_id, fwd,
                             dyno, _ms_bytes(connect), _ms_bytes(service), status, nbytes, protocol)
    line = access_line(
        method=method.decode("latin-1"), path=path.decode("latin-1"), host=host.decode("latin-1"),
        request_id=request_id.decode("latin-1"), fwd=fwd.decode("latin-1"), dyno=dyno.decode("latin-1"),
        connect=connect, service=service, status=status, nbytes=nbytes, protocol=protocol.decode("latin-1"),
        code=code)
    return b'{"type":"log","app":%s,"line":%s}\n' % (encode_basestring_ascii(app).encode(),
                                                      encode_basestring_ascii(line).encode())
