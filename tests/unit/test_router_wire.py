import pytest

from dynod.errors import UserError
from dynod.router.wire import LineSplitter, decode, encode


def test_lines_split_across_feeds():
    s = LineSplitter()
    assert s.feed(b'{"type":"a"}\n{"ty') == [b'{"type":"a"}']
    assert s.feed(b'pe":"b"}\n\n') == [b'{"type":"b"}']
    assert decode(encode({"type": "x", "v": 1})) == {"type": "x", "v": 1}


@pytest.mark.parametrize("line", [b"not json", b"[1]", b'{"no": "type"}'])
def test_bad_messages_are_user_errors(line):
    with pytest.raises(UserError):
        decode(line)
