import pytest

from dynod.router.parse import (
    CHUNKED,
    END,
    LENGTH,
    NO_BODY,
    UNTIL_CLOSE,
    Body,
    ProtocolError,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    Tunnel,
)


def feed_all(reader, *chunks):
    for c in chunks:
        reader.feed(c)
    return list(reader.events)


def test_pipelined_requests_come_out_in_order_with_their_bodies():
    events = feed_all(RequestReader(), b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /b HTTP/1.1\r\nHost: y\r\nContent-Length: 3\r\n\r\nabc")
    assert [type(e).__name__ for e in events] == ["RequestHead", "EndOfMessage", "RequestHead", "Body",
                                                  "EndOfMessage"]
    assert events[0].target == b"/a" and events[0].host == b"x" and events[0].framing == NO_BODY
    assert events[2].method == b"POST" and events[2].framing == LENGTH and events[3] == Body(b"abc")


def test_version_and_keep_alive_are_those_of_each_request():
    events = feed_all(RequestReader(), b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                      b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [(h.http_version, h.keep_alive) for h in heads] == [("1.0", True), ("1.1", False)]
    plain_10 = feed_all(RequestReader(), b"GET / HTTP/1.0\r\n\r\n")[0]
    assert not plain_10.keep_alive


def test_chunked_body_is_decoded_across_feeds():
    r = RequestReader()
    events = feed_all(r, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
                      b"c\r\n0\r\n\r\n")
    assert events[0].framing == CHUNKED
    assert b"".join(e.data for e in events if isinstance(e, Body)) == b"abc" and events[-1] is END


def test_upgrade_hands_over_the_bytes_after_the_head():
    events = feed_all(RequestReader(), b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                      b"Upgrade: websocket\r\n\r\nRAW")
    assert events[0].upgrade and events[-1] == Tunnel(b"RAW")


def test_expect_continue_is_noticed():
    events = feed_all(RequestReader(), b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 5\r\n\r\n")
    assert events[0].expect_continue and events[0].framing == LENGTH


@pytest.mark.parametrize("data,status", [
    (b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n", 400),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test\r\n\r\n", 405),
    (b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 8200 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(1001)) + b"\r\n", 431),
])
def test_bad_requests_get_the_right_status(data, status):
    with pytest.raises(ProtocolError) as info:
        RequestReader().feed(data)
    assert info.value.status == status


def test_a_long_line_dripped_in_small_pieces_is_still_refused():
    r = RequestReader()
    r.feed(b"GET / HTTP/1.1\r\nX-Big: ")
    with pytest.raises(ProtocolError) as info:
        for _ in range(100):
            r.feed(b"a" * 100)
    assert info.value.status == 431


def test_a_thousand_headers_of_eight_kilobytes_stay_within_limits_per_line():
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(999))
    events = feed_all(RequestReader(), head + b"\r\n")
    assert len(events[0].headers) == 1000


def test_response_interim_then_final_then_chunked_body():
    r = ResponseReader()
    r.start(head_only=False)
    events = feed_all(r, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3\r\nabc\r\n0\r\n\r\n")
    heads = [e for e in events if isinstance(e, ResponseHead)]
    assert [h.status for h in heads] == [100, 200] and heads[1].framing == CHUNKED and heads[1].keep_alive


def test_response_to_head_ends_at_its_head_even_with_a_content_length():
    r = ResponseReader()
    r.start(head_only=True)
    events = feed_all(r, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert events[0].framing == NO_BODY and events[-1] is END and not events[0].keep_alive


def test_response_without_length_runs_until_close_and_is_not_reusable():
    r = ResponseReader()
    r.start(head_only=False)
    events = feed_all(r, b"HTTP/1.0 200 OK\r\n\r\nabc")
    assert events[0].framing == UNTIL_CLOSE and not events[0].keep_alive


def test_switching_protocols_keeps_the_dyno_bytes():
    r = ResponseReader()
    r.start(head_only=False)
    events = feed_all(r, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"\r\nXY")
    assert events[0].status == 101 and events[-1] == Tunnel(b"XY")


def test_garbage_from_a_dyno_is_a_protocol_error():
    r = ResponseReader()
    r.start(head_only=False)
    with pytest.raises(ProtocolError):
        r.feed(b"SMTP ready\r\n\r\n")


def test_a_body_in_the_same_chunk_as_the_head_is_not_held_to_line_limits():
    body = b"z" * 70000
    for split in (None, 10, 40):  # head and body together, and the blank line split across feeds
        r = RequestReader()
        data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n" + body
        chunks = [data] if split is None else [data[:len(data) - len(body) - split],
                                               data[len(data) - len(body) - split:]]
        events = feed_all(r, *chunks)
        assert sum(len(e.data) for e in events if isinstance(e, Body)) == 70000
    rr = ResponseReader()
    rr.start(head_only=False)
    events = feed_all(rr, b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + body)
    assert events[-1] is END


@pytest.mark.parametrize("line_len,status", [(8192, None), (8193, 414)])
def test_request_line_limit_is_exact_for_a_head_in_one_read(line_len, status):
    # line_len counts the request line up to its "\n"; a short head in one read takes the fast check.
    line = b"GET /" + b"a" * (line_len - len(b"GET / HTTP/1.1\r")) + b" HTTP/1.1\r\n"
    assert len(line) == line_len + 1
    r = RequestReader()
    if status is None:
        assert feed_all(r, line + b"Host: x\r\n\r\n")[0].host == b"x"
    else:
        with pytest.raises(ProtocolError) as info:
            r.feed(line + b"\r\n")
        assert info.value.status == status


@pytest.mark.parametrize("value_len,ok", [(8192 - len(b"X-Big: \r"), True), (8193 - len(b"X-Big: \r"), False)])
def test_header_line_limit_is_exact_for_a_head_in_one_read(value_len, ok):
    data = b"GET / HTTP/1.1\r\nX-Big: " + b"v" * value_len + b"\r\n\r\n"
    if ok:
        assert len(feed_all(RequestReader(), data)[0].headers) == 1
    else:
        with pytest.raises(ProtocolError) as info:
            RequestReader().feed(data)
        assert info.value.status == 431


def test_heads_keep_their_limits_after_a_fast_first_request():
    r = RequestReader()
    r.feed(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ProtocolError) as info:
        r.feed(b"GET /2 HTTP/1.1\r\nX-Big: " + b"v" * 9000)
    assert info.value.status == 431


@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nhost: a.localhost\r\nX: 1\r\nHOST: a.localhost\r\n\r\n",
                                  b"GET / HTTP/1.0\r\nHost: a\r\nHost: \r\n\r\n"])
def test_two_host_headers_are_a_400(head):
    with pytest.raises(ProtocolError) as info:
        RequestReader().feed(head)
    assert info.value.status == 400


def test_each_pipelined_request_may_have_its_own_host():
    events = feed_all(RequestReader(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n")
    assert [e.host for e in events if isinstance(e, RequestHead)] == [b"a", b"b"]
