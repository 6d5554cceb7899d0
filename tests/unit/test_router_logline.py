from dynod.router import codes
from dynod.router.logline import access_line


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
