"""The one line per request the router writes into an app's log, in Heroku's router format. No I/O.

Heroku: `at=info method=GET path="/" host=myapp.herokuapp.com request_id=... fwd="1.2.3.4" dyno=web.1
connect=1ms service=18ms status=200 bytes=13 protocol=https`; errors put `code=H12 desc="Request
timeout"` after `at=error`, and leave dyno/connect/service empty when no dyno was reached.
"""

from __future__ import annotations

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
