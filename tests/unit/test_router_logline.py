import pytest

from dynod.router import codes
from dynod.router.logline import access_line, access_message
from dynod.router.wire import encode


def test_info_line_matches_herokus_router_format():
    line = access_line(method="GET", path="/", host="myapp.localhost", request_id="rid", fwd="1.2.3.4",
                       dyno="web.1", connect=0.0012, service=0.018, status=200, nbytes=13, protocol="http")
    assert line == ('at=info method=GET path="/" host=myapp.localhost request_id=rid fwd="1.2.3.4" '
                    'dyno=web.1 connect=1ms service=18ms status=200 bytes=13 protocol=http')


def test_error_line_has_code_and_desc_and_blank_fields_without_a_dyno():
    line = access_line(method="GET", path='/a"b', host="h", request_id="r", fwd="1.2.3.4", dyno="",
                       connect=None, service=None, status=503, nbytes=None, protocol="https", code=codes.H14)
    assert line == ('at=error code=H14 desc="No web processes running" method=GET path="/a\\"b" host=h '
                    'request_id=r fwd="1.2.3.4" dyno= connect= service= status=503 bytes= protocol=https')


def test_error_pages_are_503_and_name_nothing_internal():
    page = codes.error_response(codes.H12, keep_alive=True)
    assert page.startswith(b"HTTP/1.1 503 ") and b"Connection: close" not in page
    nf = codes.not_found_response(keep_alive=False)
    assert nf.startswith(b"HTTP/1.1 404 ") and b"Connection: close" in nf and b"198.18" not in nf
    assert codes.bad_request_response(431).startswith(b"HTTP/1.1 431 ")


def _expected(app, method, path, host, rid, fwd, dyno, connect, service, status, nbytes, protocol, code):
    line = access_line(method=method.decode("latin-1"), path=path.decode("latin-1"), host=host.decode("latin-1"),
                       request_id=rid.decode("latin-1"), fwd=fwd.decode(), dyno=dyno.decode(), connect=connect,
                       service=service, status=status, nbytes=nbytes, protocol=protocol.decode(), code=code)
    return encode({"type": "log", "app": app, "line": line})


@pytest.mark.parametrize("record", [
    ("myapp", b"GET", b"/a?b=1&c=%20", b"myapp.localhost", b"3f2a-rid", b"127.0.0.1", b"web.1", 0.0004, 0.0125,
     200, 18, b"http", None),
    ("my\u00e9app", b"POST", b'/q"uote', b"h", b"r", b"::1", b"web.2", 0.0, 1.5, 201, 0, b"https", None),
    ("a", b"GET", b"/back\\slash", b"h", b"r", b"1.2.3.4", b"web.1", 0.0, 0.0, 200, 1, b"http", None),
    ("a", b"GET", b"/caf\xc3\xa9\x01\x7f", b"h\xff", b"r", b"1.2.3.4", b"web.1", 0.0, 0.0, 200, 1, b"http", None),
    ("a", b"GET", b"/", b"h", b"r", b"1.2.3.4", b"", None, None, 503, None, b"http", codes.H14),
    ("a", b"GET", b"/", b"h", b"r", b"1.2.3.4", b"web.1", 0.002, 30.0, 503, 0, b"http", codes.H12),
])
def test_wire_message_is_the_json_of_the_access_line(record):
    assert access_message(*record) == _expected(*record)
