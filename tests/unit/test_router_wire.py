import socket

import pytest
import trio

from dynod.errors import UserError
from dynod.router.wire import MAX_MESSAGE, BlockingMessageReader, ControlLineSplitter, MessageReader, decode, encode


def test_lines_split_across_feeds():
    s = ControlLineSplitter()
    assert s.feed(b'{"type":"a"}\n{"ty') == [b'{"type":"a"}']
    assert s.feed(b'pe":"b"}\n\n') == [b'{"type":"b"}']
    assert decode(encode({"type": "x", "v": 1})) == {"type": "x", "v": 1}


@pytest.mark.parametrize("line", [b"not json", b"[1]", b'{"no": "type"}'])
def test_bad_messages_are_user_errors(line):
    with pytest.raises(UserError):
        decode(line)


def _chunks(*chunks: bytes):
    pending = list(chunks)

    async def receive() -> bytes:
        await trio.lowlevel.checkpoint()
        return pending.pop(0) if pending else b""
    return receive


def test_reader_yields_messages_split_anyhow_then_none_at_the_end():
    async def main():
        reader = MessageReader(_chunks(b'{"type":"a"}\n{"type"', b':"b","n":2}\n{"type":"c"}\n', b'{"type":"d"'))
        got = [await reader.next() for _ in range(4)]
        assert got == [{"type": "a"}, {"type": "b", "n": 2}, {"type": "c"}, None]  # "d" never ended
        assert await reader.next() is None
    trio.run(main)


def test_reader_keeps_lines_undecoded_for_relays_and_refuses_oversize_then_goes_on():
    async def main():
        reader = MessageReader(_chunks(b'{"type":"log","line":"x"}\n', b"x" * (MAX_MESSAGE + 1), b'\n{"type":"ok"}\n'))
        assert await reader.next_line() == b'{"type":"log","line":"x"}'
        with pytest.raises(UserError, match="longer than"):
            await reader.next_line()
        # The reader goes on with the next line (here the long line's newline ends an empty one).
        assert await reader.next() == {"type": "ok"}
    trio.run(main)


def test_reader_counts_a_reset_peer_as_the_end():
    async def reset() -> bytes:
        raise ConnectionResetError

    async def main():
        assert await MessageReader(reset).next() is None
    trio.run(main)


def test_blocking_reader_times_out_with_nothing_and_raises_eof_at_the_end():
    a, b = socket.socketpair()
    with a, b:
        reader = BlockingMessageReader(a)
        assert reader.read(0.01) == []
        b.sendall(b'{"type":"x"}\n{"type":"y"}\n{"ty')
        assert reader.read(1) == [{"type": "x"}, {"type": "y"}]
        b.sendall(b'pe":"z"}\n')
        assert reader.read(1) == [{"type": "z"}]
        b.close()
        with pytest.raises(EOFError):
            reader.read(1)


def test_reader_hands_a_relay_every_line_of_a_read_at_once():
    async def main():
        reader = MessageReader(_chunks(b'{"type":"log","n":1}\n{"type":"log","n":2}\n{"ty', b'pe":"x"}\n'))
        assert await reader.next_lines() == [b'{"type":"log","n":1}', b'{"type":"log","n":2}']
        assert await reader.next_lines() == [b'{"type":"x"}']
        assert await reader.next_lines() is None
    trio.run(main)
