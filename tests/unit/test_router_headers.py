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
