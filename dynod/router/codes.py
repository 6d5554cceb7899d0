"""Heroku's router error codes and the short pages a client gets with them. No I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouterCode:
    code: str
    desc: str
    status: int = 503
    level: str = "error"


H10 = RouterCode("H10", "App crashed")
H12 = RouterCode("H12", "Request timeout")
H13 = RouterCode("H13", "Connection closed without response")
H14 = RouterCode("H14", "No web processes running")
H15 = RouterCode("H15", "Idle connection")
H18 = RouterCode("H18", "Server Request Interrupted")
H19 = RouterCode("H19", "Backend connection timeout")
H20 = RouterCode("H20", "App boot timeout")
H21 = RouterCode("H21", "Backend connection refused")
H27 = RouterCode("H27", "Client Request Interrupted", status=499, level="info")
H80 = RouterCode("H80", "Maintenance mode", level="info")
H99 = RouterCode("H99", "Platform error")

_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>Application Error</title></head><body>"
    b"<h1>Application error</h1><p>An error occurred in the application and your page could not be "
    b"served. If you are the application owner, check your logs for details.</p></body></html>\n"
)
_MAINTENANCE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Offline for Maintenance</title></head><body>"
    b"<h1>Offline for maintenance</h1><p>This app is undergoing maintenance right now. "
    b"Please check back later.</p></body></html>\n"
)
_NOT_FOUND_PAGE = (
    b"<!DOCTYPE html><html><head><title>No such app</title></head><body>"
    b"<h1>There is nothing here, yet</h1><p>No app answers to this host name.</p></body></html>\n"
)

_REASONS = {400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large",
            502: b"Bad Gateway", 503: b"Service Unavailable"}


def _response(status: int, body: bytes, *, keep_alive: bool, head_only: bool = False,
              extra: bytes = b"") -> bytes:
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-cache, no-store\r\n%s%s\r\n") % (
        status, _REASONS.get(status, b"Error"), len(body), extra,
        b"" if keep_alive else b"Connection: close\r\n")
    return head if head_only else head + body


def error_response(code: RouterCode, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """The 503 a client sees for an H code (H80 gets the maintenance page)."""
    page = _MAINTENANCE_PAGE if code is H80 else _ERROR_PAGE
    return _response(code.status, page, keep_alive=keep_alive, head_only=head_only,
                     extra=b"Via: 1.1 dynod\r\n")


def not_found_response(*, keep_alive: bool, head_only: bool = False) -> bytes:
    """Unknown Host: names nothing about the apps this router serves."""
    return _response(404, _NOT_FOUND_PAGE, keep_alive=keep_alive, head_only=head_only)


def bad_request_response(status: int) -> bytes:
    """Malformed or oversized input: a short plain answer, then the router closes the connection."""
    reason = _REASONS.get(status, b"Bad Request")
    return _response(status, reason + b"\n", keep_alive=False).replace(
        b"text/html; charset=utf-8", b"text/plain", 1)


OVERLOADED = _response(503, _ERROR_PAGE, keep_alive=False)
