"""cplane.relay_response (the plane's first read of a dyno's answer, its rewrite and its send, in C)
against what the plane did before it: sock.recv, cplane.response (itself checked against parse.py in
test_router_cplane) and the send to the client.

Real kernel sockets (socketpairs, and loopback TCP for a reset), no root: the client must get exactly
response()'s bytes, a declined read must come back byte for byte for the Python path, and each socket
outcome (nothing to read, the dyno's end or reset, a client that is gone, full or takes part) must be
the one the plane's own calls gave.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator

import pytest

from dynod.router import cplane
from dynod.router.netio import RECV_SIZE

from .test_router_cplane import RESPONSES, RESPONSES_DECLINED, _mutated, check_response


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """(dyno's end, router's dyno socket, router's client socket, client's end), all non-blocking."""
    dyno, dyno_side = socket.socketpair()
    client_side, client = socket.socketpair()
    socks = (dyno, dyno_side, client_side, client)
    for s in socks:
        s.setblocking(False)
    yield socks
    for s in socks:
        s.close()


def relay(dyno_side: socket.socket, client_side: socket.socket, flags: tuple[bool, bool, bool]) -> object:
    return cplane.relay_response(dyno_side.fileno(), client_side.fileno(), *flags)


def drain(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


def check_relay(pair, data: bytes, flags: tuple[bool, bool, bool]) -> bool:
    """Assert the relay of ``data`` is what recv + response() + send gave; True when C took it."""
    dyno, dyno_side, client_side, client = pair
    dyno.sendall(data)
    got = relay(dyno_side, client_side, flags)
    fast = cplane.response(data, *flags)
    if fast is None:
        assert got == data, data  # declined: the read's bytes, for parse.py, and nothing sent
        assert drain(client) == b""
        return False
    out, status, nbytes, keep_alive = fast
    assert got == (status, nbytes, keep_alive, b"", len(data)), data
    assert drain(client) == out, data
    assert check_response(data, *flags)
    return True


FLAGS = [(False, True, False), (False, False, False), (False, True, True), (True, True, False)]


@pytest.mark.parametrize("data", RESPONSES + RESPONSES_DECLINED)
def test_each_response_is_relayed_as_the_python_path_would_or_handed_back(pair, data: bytes) -> None:
    for flags in FLAGS:
        check_relay(pair, data, flags)


def test_generated_and_mutated_responses_are_relayed_or_handed_back_byte_for_byte(pair) -> None:
    rng = random.Random(62)
    taken = 0
    for _ in range(1500):
        base = rng.choice(RESPONSES)
        flags = (rng.random() < 0.1, rng.random() < 0.8, rng.random() < 0.2)
        taken += check_relay(pair, _mutated(rng, base), flags)
        taken += check_relay(pair, base[:rng.randrange(1, len(base) + 1)], flags)
    assert taken > 100  # the mutations mostly keep a response whole: enough of them are taken


def test_nothing_to_read_is_none_and_the_dyno_end_is_empty_bytes(pair) -> None:
    dyno, dyno_side, client_side, client = pair
    assert relay(dyno_side, client_side, FLAGS[0]) is None
    dyno.shutdown(socket.SHUT_WR)
    assert relay(dyno_side, client_side, FLAGS[0]) == b""
    assert drain(client) == b""


def test_a_reset_and_a_closed_fd_read_as_the_end() -> None:
    client_side, client = socket.socketpair()
    with socket.create_server(("127.0.0.1", 0)) as server, client_side, client:
        dyno_side = socket.create_connection(server.getsockname())
        dyno, _ = server.accept()
        dyno.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        dyno.close()  # an RST: recv fails with ECONNRESET, which the plane's recv read as b""
        dyno_side.setblocking(False)
        try:
            assert relay(dyno_side, client_side, FLAGS[0]) == b""
        finally:
            dyno_side.close()
        fd = socket.socket().detach()
        socket.close(fd)  # EBADF: an OSError to sock.recv too
        assert cplane.relay_response(fd, client_side.fileno(), *FLAGS[0]) == b""


def test_a_client_that_is_gone_gets_nothing_and_is_said_to_be_gone(pair) -> None:
    dyno, dyno_side, client_side, client = pair
    client.close()
    dyno.sendall(RESPONSES[0])
    got = relay(dyno_side, client_side, FLAGS[0])
    assert type(got) is tuple and got[3] is None  # the plane's _send returned False: H27


def test_a_full_or_slow_client_socket_leaves_the_rest_unsent(pair) -> None:
    dyno, dyno_side, client_side, client = pair
    filled = 0
    while True:  # fill the client's socket until it takes nothing
        try:
            filled += client_side.send(b"f" * 4096)
        except BlockingIOError:
            break
    body = b"b" * 3000
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    out = cplane.response(data, False, True, False)[0]
    dyno.sendall(data)
    got = relay(dyno_side, client_side, FLAGS[0])
    assert type(got) is tuple
    status, nbytes, keep_alive, unsent, nread = got
    assert (status, nbytes, keep_alive, nread) == (200, 3000, True, len(data))
    assert unsent and out.endswith(unsent)  # what the socket did not take, for the plane's EPOLLOUT
    assert drain(client) == b"f" * filled + out[:len(out) - len(unsent)]
    client_side.sendall(unsent)
    assert drain(client) == unsent


def test_a_read_as_long_as_the_plane_reads_is_handed_back_whole(pair) -> None:
    dyno, dyno_side, client_side, client = pair
    assert cplane.RECV_SIZE == RECV_SIZE
    body = b"x" * (2 * RECV_SIZE)
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    sent = dyno.send(data)
    if sent <= RECV_SIZE:
        pytest.skip(f"this kernel's socketpair took only {sent} bytes at once")
    got = relay(dyno_side, client_side, FLAGS[0])
    assert got == data[:RECV_SIZE]  # one read of the plane's size, declined (the body goes on): parse.py's
    assert drain(client) == b""


def test_arguments_are_checked(pair) -> None:
    dyno, dyno_side, client_side, client = pair
    with pytest.raises(TypeError):
        cplane.relay_response(dyno_side.fileno(), client_side.fileno(), False, True)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        cplane.relay_response("3", client_side.fileno(), False, True, False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cplane.relay_response(-1, client_side.fileno(), False, True, False)
    with pytest.raises((ValueError, OverflowError)):
        cplane.relay_response(dyno_side.fileno(), 2**40, False, True, False)
