"""Drain frames: RFC 5424 headers Logplex writes, RFC 6587 octet counting."""

import re

from dynod.logplex.format import line_prefix
from dynod.logplex.syslog import frame, frames, l10_message, l11_message, message

AT = 1795694400.123456
RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) (-|\[.*\]) (.*)$",
                     re.S)


def test_app_line_becomes_local7_info_with_token_as_host():
    msg = message(line_prefix(AT, "app", "web.1") + "hello world", "d.abc")
    assert msg == b"<190>1 2026-11-26T12:00:00.123456+00:00 d.abc app web.1 - - hello world"


def test_router_and_platform_and_logplex_facilities():
    assert message(line_prefix(AT, "dynod", "router") + "at=info", "host").startswith(b"<158>1 ")
    assert message(line_prefix(AT, "dynod", "web.1") + "State changed", "host").startswith(b"<134>1 ")
    assert message(line_prefix(AT, "dynod", "logplex") + "Error L10", "host").startswith(b"<172>1 ")


def test_message_parses_as_rfc5424():
    msg = message(line_prefix(AT, "app", "run.4821") + "x: [y] z", "d.1")
    m = RFC5424.match(msg)
    assert m is not None
    assert m.group(4) == b"app" and m.group(5) == b"run.4821" and m.group(8) == b"x: [y] z"


def test_octet_counting_counts_bytes_not_characters():
    msg = "caf\u00e9".encode()
    assert frame(msg) == b"5 caf\xc3\xa9"


def test_frames_concatenate():
    lines = [line_prefix(AT, "app", "web.1") + "a", line_prefix(AT, "app", "web.1") + "bb"]
    data = frames(lines, "host")
    first = message(lines[0], "host")
    second = message(lines[1], "host")
    assert data == b"%d %s%d %s" % (len(first), first, len(second), second)


def test_notices_are_logplex_wording():
    assert l10_message(7, AT) == (
        "Error L10 (output buffer overflow): 7 messages dropped since 2026-11-26T12:00:00.123456+00:00.")
    assert l11_message(3, AT) == (
        "Error L11 (Tail buffer overflow) -> This tail session dropped 3 messages since "
        "2026-11-26T12:00:00.123456+00:00.")
