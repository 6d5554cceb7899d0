"""Drain URLs and the per-drain buffer with its L10 accounting."""

import pytest

from dynod.errors import UserError
from dynod.logplex.drain import Drain, DrainBuffer, parse_drain_url, redact
from dynod.logplex.format import parse_line


def test_syslog_urls_and_default_ports():
    t = parse_drain_url("syslog://logs.example.com:12345")
    assert (t.scheme, t.host, t.port, t.tls) == ("syslog", "logs.example.com", 12345, False)
    assert parse_drain_url("syslog://logs.example.com").port == 514
    tls = parse_drain_url("syslog+tls://127.0.0.1")
    assert (tls.port, tls.tls) == (6514, True)


def test_https_url_keeps_path_and_moves_credentials_out():
    t = parse_drain_url("https://user:p%40ss@Logs.Example.com/drain?x=1")
    assert (t.host, t.port, t.path) == ("logs.example.com", 443, "/drain?x=1")
    assert (t.username, t.password) == ("user", "p@ss")
    assert t.post_url == "https://logs.example.com:443/drain?x=1"
    assert parse_drain_url("https://[::1]:8443").post_url == "https://[::1]:8443/"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://logs.example.com", "unsupported scheme 'ftp:'"),
        ("logs.example.com:514", "unsupported scheme"),
        ("syslog://", "names no host"),
        ("syslog://bad_host!:514", "no valid host"),
        ("syslog://host:99999", "not a valid URL"),
        ("syslog://host:0", "port 0"),
        ("syslog://u:p@host:514", "take no user"),
        ("", "empty"),
        ("syslog://host :514", "spaces"),
    ],
)
def test_bad_urls_are_one_user_error(url, says):
    with pytest.raises(UserError) as err:
        parse_drain_url(url)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_redact_hides_the_password_only():
    assert redact("https://u:secret@h/x") == "https://u:***@h/x"
    assert redact("syslog://h:1") == "syslog://h:1"


def test_drain_records_have_heroku_token_shape():
    d = Drain.new("syslog://h:1")
    assert d.token.startswith("d.") and len(d.token) == 38
    assert Drain.from_json(d.to_json()) == d
    with pytest.raises(ValueError):
        Drain.from_json({"id": "x"})


def lines(n, start=0):
    return [f"2026-11-26T12:00:00.000000+00:00 app[web.1]: line {i}" for i in range(start, start + n)]


def test_buffer_keeps_newest_and_reports_drops_in_band():
    b = DrainBuffer(4)
    b.push(lines(3), now=100.0)
    b.push(lines(3, start=3), now=101.0)  # 2 oldest fall off
    assert len(b) == 4 and b.dropped_total == 2
    batch = b.take(100, now=102.0)
    l10 = parse_line(batch.lines[0])
    assert l10 is not None and (l10.source, l10.dyno) == ("dynod", "logplex")
    assert "Error L10 (output buffer overflow): 2 messages dropped since" in l10.message
    assert [parse_line(x).message for x in batch.lines[1:]] == ["line 2", "line 3", "line 4", "line 5"]
    assert batch.line_count == 4 and batch.carried_drops == 2
    assert not b.pending
    assert b.take(100, now=103.0).lines == []


def test_take_respects_max_lines():
    b = DrainBuffer(10)
    b.push(lines(5), now=1.0)
    assert b.take(2, now=2.0).line_count == 2
    assert len(b) == 3


def test_lost_batch_is_reported_in_next_l10_with_carried_drops():
    b = DrainBuffer(2)
    b.push(lines(3), now=10.0)  # 1 dropped at t=10
    batch = b.take(10, now=11.0)
    b.lost(batch, now=12.0)  # its 2 lines and the drop its L10 carried are owed again
    again = b.take(10, now=13.0)
    assert again.carried_drops == 3
    assert "3 messages dropped since 1970-01-01T00:00:10.000000+00:00." in again.lines[0]
    assert again.carried_since == 10.0
    assert b.dropped_total == 3  # the carried drop is not counted twice


def test_announce_is_rate_limited_and_counts_since_last():
    b = DrainBuffer(1)
    b.push(lines(3), now=0.0)
    assert b.announce(now=1.0, every=10.0) == (2, 0.0)
    b.push(lines(2), now=2.0)
    assert b.announce(now=5.0, every=10.0) is None
    assert b.announce(now=11.5, every=10.0) == (2, 2.0)
    assert b.announce(now=30.0, every=10.0) is None
