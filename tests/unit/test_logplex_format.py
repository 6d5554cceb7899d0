"""Line formats: timestamps, splitting, escaping, parsing and filters."""

import re

import pytest

from dynod.errors import UserError
from dynod.logplex.format import (
    MAX_LINE_BYTES,
    DynoOutputSplitter,
    LineFilter,
    line_prefix,
    parse_line,
    split_long,
    split_message,
    timestamp,
)

AT = 1795694400.123456  # 2026-11-26T12:00:00.123456Z


def test_timestamp_is_rfc3339_utc_with_microseconds():
    assert timestamp(AT) == "2026-11-26T12:00:00.123456+00:00"
    assert timestamp(1795694400.0) == "2026-11-26T12:00:00.000000+00:00"


def test_line_prefix_matches_heroku_shape():
    assert line_prefix(AT, "app", "web.1") + "hi" == "2026-11-26T12:00:00.123456+00:00 app[web.1]: hi"


def test_splitter_returns_complete_lines_and_keeps_the_open_one():
    s = DynoOutputSplitter()
    assert s.feed(b"one\ntw") == ["one"]
    assert s.feed(b"o\nthree\n") == ["two", "three"]
    assert s.feed(b"four") == []
    assert s.finish() == ["four"]
    assert s.finish() == []


def test_empty_lines_are_lines():
    assert DynoOutputSplitter().feed(b"\n\nx\n") == ["", "", "x"]


def test_crlf_endings_lose_their_cr():
    assert DynoOutputSplitter().feed(b"dos\r\nunix\n") == ["dos", "unix"]


def test_invalid_utf8_and_controls_are_kept_escaped():
    lines = DynoOutputSplitter().feed(b"bad \xff\xfe ok\nnul \x00 bell \x07 del \x7f\n")
    assert lines == ["bad \\xff\\xfe ok", "nul \\x00 bell \\x07 del \\x7f"]


def test_tab_esc_and_unicode_pass_through():
    text = "\t\x1b[31mred\x1b[0m caf\u00e9 \U0001f600"
    assert DynoOutputSplitter().feed(text.encode() + b"\n") == [text]


def test_line_over_limit_is_split_at_10000_bytes():
    line = b"a" * (2 * MAX_LINE_BYTES + 5)
    out = DynoOutputSplitter().feed(line + b"\nnext\n")
    assert [len(x) for x in out] == [MAX_LINE_BYTES, MAX_LINE_BYTES, 5, 4]
    assert "".join(out[:3]) == line.decode()


def test_line_exactly_at_limit_is_not_split():
    assert DynoOutputSplitter().feed(b"b" * MAX_LINE_BYTES + b"\n") == ["b" * MAX_LINE_BYTES]


def test_open_line_is_flushed_in_full_pieces_before_its_newline():
    s = DynoOutputSplitter()
    out = s.feed(b"x" * (MAX_LINE_BYTES + 10))
    assert out == ["x" * MAX_LINE_BYTES]
    assert s.feed(b"yz\n") == ["x" * 10 + "yz"]


def test_split_never_halves_a_utf8_character():
    euro = "\u20ac".encode()  # 3 bytes
    line = b"a" + euro * 4000  # 12001 bytes; byte 10000 falls inside a character
    pieces = split_long(line)
    assert all(len(p) <= MAX_LINE_BYTES for p in pieces)
    assert b"".join(pieces) == line
    for piece in pieces:
        piece.decode("utf-8")  # each piece is whole characters


def test_split_of_non_utf8_cuts_at_the_limit():
    line = b"\x80" * (MAX_LINE_BYTES + 1)
    assert [len(p) for p in split_long(line)] == [MAX_LINE_BYTES, 1]


def test_split_message_splits_newlines_and_drops_one_trailing():
    assert split_message("a\nb\n") == ["a", "b"]
    assert split_message("") == [""]
    assert split_message("x" * 10_001) == ["x" * 10_000, "x"]


def test_parse_line_round_trips():
    line = line_prefix(AT, "dynod", "router") + "at=info method=GET path=/: x"
    parsed = parse_line(line)
    assert parsed is not None
    assert (parsed.source, parsed.dyno, parsed.message) == ("dynod", "router", "at=info method=GET path=/: x")
    assert parsed.timestamp == "2026-11-26T12:00:00.123456+00:00"


@pytest.mark.parametrize("junk", ["", "nospace", "ts nobracket: x", "ts app[web.1] no colon"])
def test_parse_line_refuses_other_shapes(junk):
    assert parse_line(junk) is None


@pytest.mark.parametrize(
    ("ps", "source", "line_source", "dyno", "expected"),
    [
        ("web", None, "app", "web.1", True),
        ("web", None, "app", "web.12", True),
        ("web", None, "app", "webhook.1", False),
        ("web", None, "app", "worker.1", False),
        ("web.1", None, "app", "web.1", True),
        ("web.1", None, "app", "web.12", False),
        (None, "app", "app", "web.1", True),
        (None, "app", "dynod", "web.1", False),
        (None, "dynod", "dynod", "router", True),
        ("router", "dynod", "dynod", "router", True),
        ("web", "dynod", "app", "web.1", False),
        (None, None, "dynod", "api", True),
    ],
)
def test_filters(ps, source, line_source, dyno, expected):
    f = LineFilter.build(ps, source)
    assert f.matches(line_source, dyno) is expected
    assert f.matches_line(line_prefix(AT, line_source, dyno) + "m") is expected


def test_heroku_source_is_an_alias_for_dynod():
    assert LineFilter.build(None, "heroku").source == "dynod"


def test_unknown_source_is_one_user_error():
    with pytest.raises(UserError, match=re.escape("Unknown log source 'syslog'")):
        LineFilter.build(None, "syslog")
