"""FrameParser's checks after the split of ``feed`` (fast path, ``_parse``, ``_check_header``,
``_fragment``): which violation is reported, that it is reported however the bytes arrive, and
that the messages before it are kept. Pure."""
import pytest

from crossws_sync.errors import MessageTooBig, ProtocolError
from crossws_sync.wire.frames import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, FrameParser, encode_frame

KEY = b"\x01\x02\x03\x04"


def masked(first, payload=b"", *, mask=True):
    """A frame from its first byte, with any RSV/opcode bits (7-bit length)."""
    header = bytes((first, (0x80 if mask else 0) | len(payload)))
    if not mask:
        return header + payload
    return header + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


VIOLATIONS = [
    ("reserved bits", [masked(0x80 | 0x40 | OP_TEXT, b"x")], "reserved bits set"),
    ("rsv on a control frame", [masked(0x80 | 0x20 | OP_PING)], "reserved bits set"),
    ("unmasked", [masked(0x80 | OP_TEXT, b"x", mask=False)], "masking is wrong"),
    ("unknown data opcode", [masked(0x80 | 0x3, b"x")], "unknown data opcode 3"),
    ("unknown control opcode", [masked(0x80 | 0xB)], "unknown control opcode 11"),
    ("fragmented control", [masked(OP_PING, b"x")], "control frame fragmented"),
    ("lone continuation", [masked(0x80 | OP_CONT, b"x")], "continuation frame without"),
    ("new message inside one", [masked(OP_TEXT, b"a"), masked(0x80 | OP_BINARY, b"b")], "new data frame inside"),
    ("invalid utf-8 in a fragment", [masked(OP_TEXT, b"\xff")], "invalid UTF-8"),
]


@pytest.mark.parametrize("frames_, message", [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_each_violation_is_reported_however_the_bytes_arrive(frames_, message, how):
    data = masked(0x80 | OP_TEXT, b"before") + b"".join(frames_)
    parser = FrameParser(None)
    out = []
    with pytest.raises(ProtocolError, match=message):
        if how == "whole":
            parser.feed(data, out)
        else:
            for i in range(len(data)):
                parser.feed(data[i:i + 1], out)
    assert out[0] == (OP_TEXT, b"before")


def test_control_frame_checked_before_its_payload_arrives():
    frame = bytes((0x80 | OP_PING, 0x80 | 126)) + (200).to_bytes(2, "big")
    with pytest.raises(ProtocolError, match="longer than 125"):
        FrameParser(None).feed(frame)


def test_size_limit_counts_fragments_and_spares_control_frames():
    parser = FrameParser(10)
    out = parser.feed(encode_frame(OP_TEXT, b"12345", mask=True, fin=False)
                      + encode_frame(OP_PING, b"p" * 20, mask=True))
    assert out == [(OP_PING, b"p" * 20)]
    with pytest.raises(MessageTooBig):
        parser.feed(encode_frame(OP_CONT, b"123456", mask=True))


def test_fast_path_and_loop_agree():
    frame = encode_frame(OP_TEXT, b"x" * 300, mask=True)  # 16-bit length: fast path
    assert FrameParser(None).feed(frame) == [(OP_TEXT, b"x" * 300)]
    assert FrameParser(None).feed(frame + frame) == [(OP_TEXT, b"x" * 300)] * 2  # loop
    with pytest.raises(MessageTooBig):
        FrameParser(299).feed(frame)
    client = FrameParser(None, expect_masked=False)
    assert client.feed(encode_frame(OP_TEXT, b"hi")) == [(OP_TEXT, b"hi")]
    assert client.feed(encode_frame(OP_TEXT, b"y" * 200)) == [(OP_TEXT, b"y" * 200)]
