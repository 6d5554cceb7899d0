"""The attach frame protocol: encoder and incremental decoder, no I/O."""

from __future__ import annotations

import pytest

from dynod.api.attach import (
    MAX_PAYLOAD,
    AttachProtocolError,
    Frame,
    FrameDecoder,
    FrameType,
    decode_exit,
    decode_resize,
    encode_data,
    encode_error,
    encode_exit,
    encode_frame,
    encode_resize,
)


def test_frame_layout_is_type_byte_then_big_endian_length_then_payload() -> None:
    assert encode_frame(FrameType.STDOUT, b"hi") == b"\x01\x00\x00\x00\x02hi"
    assert encode_frame(FrameType.STDIN_EOF) == b"\x04\x00\x00\x00\x00"


def test_resize_and_exit_payloads_round_trip() -> None:
    resize, exit_frame = FrameDecoder().feed(encode_resize(50, 132) + encode_exit(-1))
    assert resize.type == FrameType.RESIZE and decode_resize(resize.payload) == (50, 132)
    assert exit_frame.type == FrameType.EXIT and decode_exit(exit_frame.payload) == -1
    assert decode_exit(FrameDecoder().feed(encode_exit(137))[0].payload) == 137


def test_resize_clamps_sizes_into_u16() -> None:
    frame = FrameDecoder().feed(encode_resize(70000, -3))[0]
    assert decode_resize(frame.payload) == (0xFFFF, 0)


def test_decoder_is_incremental_byte_by_byte() -> None:
    stream = encode_data(FrameType.STDOUT, b"hello") + encode_error("no such app") + encode_exit(3)
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i:i + 1])
    assert frames == [Frame(FrameType.STDOUT, b"hello"), Frame(FrameType.ERROR, b"no such app"),
                      Frame(FrameType.EXIT, b"\x00\x00\x00\x03")]
    assert decoder.pending == 0


def test_pending_counts_a_truncated_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(FrameType.STDERR, b"abcdef")[:-2]) == []
    assert decoder.pending == 9


def test_large_data_is_split_into_frames_under_the_limit() -> None:
    data = bytes(range(256)) * (MAX_PAYLOAD // 256 * 2 + 1)
    frames = FrameDecoder().feed(encode_data(FrameType.STDIN, data))
    assert len(frames) == 3
    assert all(len(f.payload) <= MAX_PAYLOAD for f in frames)
    assert b"".join(f.payload for f in frames) == data


def test_empty_data_encodes_to_nothing() -> None:
    assert encode_data(FrameType.STDOUT, b"") == b""


def test_unknown_frame_type_is_a_protocol_error() -> None:
    with pytest.raises(AttachProtocolError, match="unknown attach frame type 99"):
        FrameDecoder().feed(b"\x63\x00\x00\x00\x00")


def test_oversized_length_is_refused_before_buffering() -> None:
    with pytest.raises(AttachProtocolError, match="exceeds"):
        FrameDecoder().feed(b"\x01" + (MAX_PAYLOAD + 1).to_bytes(4, "big"))
    with pytest.raises(ValueError):
        encode_frame(FrameType.STDOUT, b"x" * (MAX_PAYLOAD + 1))


def test_malformed_fixed_payloads_are_protocol_errors() -> None:
    with pytest.raises(AttachProtocolError):
        decode_resize(b"\x00")
    with pytest.raises(AttachProtocolError):
        decode_exit(b"\x00\x00")


def test_error_text_is_utf8() -> None:
    frame = FrameDecoder().feed(encode_error("dyno größe"))[0]
    assert frame.payload.decode() == "dyno größe"
