from dynod.router.headers import client_head, pick_request_id, upstream_head
from dynod.router.parse import CHUNKED, LENGTH, NO_BODY, UNTIL_CLOSE, RequestReader, ResponseReader


def request(raw):
    r = RequestReader()
    r.feed(raw)
    return r.events[0]


def response(raw, head_only=False):
    r = ResponseReader()
    r.start(head_only=head_only)
    r.feed(raw)
    return r.events[0]


def headers_of(block):
    lines = block.split(b"\r\n")[1:]
    return [tuple(line.split(b": ", 1)) for line in lines if line]


def test_upstream_head_adds_herokus_headers_and_drops_hop_by_hop_ones():
    head = request(b"GET /p?q=1 HTTP/1.0\r\nHost: a.localhost\r\nConnection: keep-alive, X-Secret\r\n"
                   b"X-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 203.0.113.9\r\n"
                   b"X-Forwarded-Proto: https\r\nX-Request-Start: 1\r\n\r\n")
    out = upstream_head(head, client_ip=b"127.0.0.2", proto=b"http", port=b"8080", request_id=b"rid",
                        start_ms=1700000000123)
    assert out.startswith(b"GET /p?q=1 HTTP/1.1\r\n") and out.endswith(b"\r\n\r\n")
    h = dict(headers_of(out))
    assert h[b"X-Forwarded-For"] == b"203.0.113.9, 127.0.0.2"
    assert h[b"X-Forwarded-Proto"] == b"http" and h[b"X-Forwarded-Port"] == b"8080"
    assert h[b"X-Request-Start"] == b"1700000000123" and h[b"X-Request-Id"] == b"rid"
    assert h[b"Via"] == b"1.1 dynod"
    assert b"Connection" not in h and b"Keep-Alive" not in h and b"X-Secret" not in h


def test_upgrade_headers_survive_for_websocket():
    head = request(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    h = dict(headers_of(upstream_head(head, client_ip=b"1.2.3.4", proto=b"http", port=b"80",
                                      request_id=b"r", start_ms=0)))
    assert h[b"Upgrade"] == b"websocket" and h[b"Connection"] == b"Upgrade"


def test_request_id_is_the_clients_up_to_200_chars_else_a_uuid():
    assert pick_request_id(request(b"GET / HTTP/1.1\r\nX-Request-Id: abc-123\r\n\r\n")) == b"abc-123"
    long_id = b"x" * 201
    generated = pick_request_id(request(b"GET / HTTP/1.1\r\nX-Request-Id: " + long_id + b"\r\n\r\n"))
    assert generated != long_id and len(generated) == 36
    assert len(pick_request_id(request(b"GET / HTTP/1.1\r\n\r\n"))) == 36


def test_client_head_reframes_for_the_client():
    chunked = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")
    h11 = client_head(chunked, framing=CHUNKED, keep_alive=True, client_version="1.1")
    assert b"Transfer-Encoding: chunked\r\n" in h11 and b"Connection" not in h11 and b"Via: 1.1 dynod" in h11
    h10 = client_head(chunked, framing=UNTIL_CLOSE, keep_alive=False, client_version="1.0")
    assert b"Transfer-Encoding" not in h10 and b"Connection: close" in h10
    sized = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    assert b"Connection: keep-alive" in client_head(sized, framing=LENGTH, keep_alive=True, client_version="1.0")


def test_head_response_keeps_its_content_length():
    r = response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", head_only=True)
    assert b"Content-Length: 10" in client_head(r, framing=NO_BODY, keep_alive=True, client_version="1.1")


NGINX_HEAD = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
              b"Connection: keep-alive\r\nX-Extra:  spaced \r\n\r\n")


def test_a_plain_response_head_passes_as_sent_with_keep_alive_cut_and_via_added():
    out = client_head(response(NGINX_HEAD + b"hello"), framing=LENGTH, keep_alive=True, client_version="1.1")
    assert out == (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                   b"X-Extra:  spaced \r\nVia: 1.1 dynod\r\n\r\n")


def test_a_passable_head_is_rebuilt_when_the_client_needs_other_framing_or_connection_headers():
    head = response(NGINX_HEAD)
    assert head.passable is not None
    closing = client_head(head, framing=LENGTH, keep_alive=False, client_version="1.1")
    assert b"Connection: close\r\n" in closing and b"keep-alive" not in closing
    old = client_head(head, framing=LENGTH, keep_alive=True, client_version="1.0")
    assert b"Connection: keep-alive\r\n" in old


def test_heads_that_must_be_rewritten_are_not_passable():
    assert response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").passable is None
    assert response(b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nContent-Length: 0\r\n\r\n").passable is None
    assert response(b"HTTP/1.1 200 OK\r\nVia: 1.1 cdn\r\nContent-Length: 0\r\n\r\n").passable is None
    assert response(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n").passable is None
    assert response(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: keep-alive\r\n"
                    b"Content-Length: 0\r\n\r\n").passable is None


def test_a_head_split_across_reads_after_an_interim_one_is_rebuilt_whole():
    r = ResponseReader()
    r.start(head_only=False)
    r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Le")
    r.feed(b"ngth: 2\r\nX-A: b\r\n\r\nok")
    interim, final = r.events[0], r.events[2]
    assert interim.status == 100 and interim.passable is not None
    assert final.status == 201 and final.passable is None
    out = client_head(final, framing=LENGTH, keep_alive=True, client_version="1.1")
    assert out == b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\nVia: 1.1 dynod\r\n\r\n"


def test_a_plain_request_head_passes_as_sent_with_herokus_headers_added():
    head = request(b"GET /a?b=1 HTTP/1.1\r\nHost: a.localhost\r\nConnection: keep-alive\r\nAccept:  */*\r\n\r\n")
    out = upstream_head(head, client_ip=b"127.0.0.2", proto=b"http", port=b"80", request_id=b"rid", start_ms=7)
    assert out == (b"GET /a?b=1 HTTP/1.1\r\nHost: a.localhost\r\nAccept:  */*\r\nX-Forwarded-For: 127.0.0.2\r\n"
                   b"X-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\nX-Request-Start: 7\r\n"
                   b"X-Request-Id: rid\r\nVia: 1.1 dynod\r\n\r\n")


def test_requests_that_must_be_rewritten_are_not_passable():
    for raw in (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", b"GET / HTTP/1.1\r\nX-Request-Id: mine\r\n\r\n",
                b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", b"GET / HTTP/1.1\r\nVia: 1.1 cdn\r\n\r\n",
                b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"):
        assert request(raw).passable is None, raw


def test_only_the_first_of_pipelined_heads_in_one_read_passes_and_the_rest_are_rebuilt():
    r = RequestReader()
    r.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHo")
    r.feed(b"st: a\r\n\r\n")
    first, second = r.events[0], r.events[2]
    assert first.passable == b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" and second.passable is None
    out = upstream_head(second, client_ip=b"1.1.1.1", proto=b"http", port=b"80", request_id=b"r", start_ms=1)
    assert out.startswith(b"GET /2 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n")
