"""RFC 6455 framing (pure): encoders, the incremental parser, close payloads and handshake keys."""
import base64
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossws_sync.wire import frames
from crossws_sync.errors import CrossWSError, MessageTooBig, ProtocolError
from crossws_sync.wire.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    accept_key,
    encode_close,
    encode_frame,
    encode_text,
    new_client_key,
    parse_close_payload,
    unmask,
)

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]
DATA_OPCODES = [OP_TEXT, OP_BINARY]
CONTROL_OPCODES = [OP_CLOSE, OP_PING, OP_PONG]


def _payload(length):
    return bytes((i * 7 + 3) & 0xFF for i in range(length))


def server_parser(**kwargs):
    """The server side: client frames must be masked."""
    kwargs.setdefault("max_message_size", None)
    return FrameParser(expect_masked=True, **kwargs)


def client_parser(**kwargs):
    """The client side: server frames must not be masked."""
    kwargs.setdefault("max_message_size", None)
    return FrameParser(expect_masked=False, **kwargs)


def raw_frame(first_byte, payload=b"", *, mask_key=None, length=None):
    """Build a frame by hand (to produce frames our encoder refuses to make)."""
    length = len(payload) if length is None else length
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        header = bytes((first_byte, mask_bit | length))
    elif length < 65536:
        header = bytes((first_byte, mask_bit | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first_byte, mask_bit | 127)) + struct.pack("!Q", length)
    if mask_key is None:
        return header + payload
    return header + mask_key + bytes(b ^ mask_key[i % 4] for i, b in enumerate(payload))


# Encoding: exact header layout per length class ---------------------------------------------


@pytest.mark.parametrize(
    "length, header",
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_unmasked_header_per_length_class(length, header):
    payload = _payload(length)
    frame = encode_frame(OP_BINARY, payload)
    assert frame == header + payload


@pytest.mark.parametrize("length, header_len", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_masked_frame_layout(length, header_len):
    payload = _payload(length)
    frame = encode_frame(OP_BINARY, payload, mask=True)
    assert frame[1] & 0x80, "mask bit must be set"
    assert len(frame) == header_len + 4 + length
    key = frame[header_len:header_len + 4]
    body = frame[header_len + 4:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == payload


def test_fin_bit_and_text_encoding():
    assert encode_frame(OP_TEXT, b"ab", fin=False) == b"\x01\x02ab"
    assert encode_frame(OP_CONT, b"cd") == b"\x80\x02cd"
    assert encode_text("h\u00e9") == b"\x81\x03h\xc3\xa9"


# Round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", DATA_OPCODES)
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("masked", [True, False])
def test_data_round_trip(opcode, length, masked):
    payload = _payload(length)
    parser = server_parser() if masked else client_parser()
    assert parser.feed(encode_frame(opcode, payload, mask=masked)) == [(opcode, payload)]
    assert parser.buffered == 0


@pytest.mark.parametrize("opcode", CONTROL_OPCODES)
@pytest.mark.parametrize("length", [0, 2, 125])
@pytest.mark.parametrize("masked", [True, False])
def test_control_round_trip(opcode, length, masked):
    payload = b"\x03\xe8" + b"r" * (length - 2) if opcode == OP_CLOSE and length else _payload(length)
    parser = server_parser() if masked else client_parser()
    assert parser.feed(encode_frame(opcode, payload, mask=masked)) == [(opcode, payload)]


def test_text_round_trip_with_non_ascii():
    text = "caf\u00e9 \u2603 \U0001f600"
    parser = server_parser()
    [(opcode, payload)] = parser.feed(encode_text(text, mask=True))
    assert opcode == OP_TEXT
    assert payload.decode("utf-8") == text


def test_several_frames_in_one_chunk_and_a_trailing_partial_frame():
    parser = server_parser()
    first = encode_text("one", mask=True)
    second = encode_frame(OP_PING, b"p", mask=True)
    third = encode_text("three", mask=True)
    out = parser.feed(first + second + third[:3])
    assert out == [(OP_TEXT, b"one"), (OP_PING, b"p")]
    assert parser.buffered == 3
    assert parser.feed(third[3:]) == [(OP_TEXT, b"three")]
    assert parser.buffered == 0


# Fragmentation ------------------------------------------------------------------------------


def test_fragmented_message_is_reassembled():
    parser = server_parser()
    chunks = [
        encode_frame(OP_TEXT, b"Hel", mask=True, fin=False),
        encode_frame(OP_CONT, b"lo, ", mask=True, fin=False),
        encode_frame(OP_CONT, b"", mask=True, fin=False),
        encode_frame(OP_CONT, b"world", mask=True, fin=True),
    ]
    assert parser.feed(chunks[0]) == []
    assert parser.feed(chunks[1]) == []
    assert parser.feed(chunks[2]) == []
    assert parser.feed(chunks[3]) == [(OP_TEXT, b"Hello, world")]
    # The parser is ready for the next message afterwards.
    assert parser.feed(encode_frame(OP_BINARY, b"\x00", mask=True)) == [(OP_BINARY, b"\x00")]


def test_control_frames_interleaved_within_fragments_are_delivered_first():
    parser = server_parser()
    data = b"".join(
        [
            encode_frame(OP_BINARY, b"ab", mask=True, fin=False),
            encode_frame(OP_PING, b"ping1", mask=True),
            encode_frame(OP_CONT, b"cd", mask=True, fin=False),
            encode_frame(OP_PONG, b"", mask=True),
            encode_frame(OP_CONT, b"ef", mask=True, fin=True),
        ]
    )
    assert parser.feed(data) == [(OP_PING, b"ping1"), (OP_PONG, b""), (OP_BINARY, b"abcdef")]


def test_continuation_without_a_started_message_is_rejected():
    with pytest.raises(ProtocolError) as info:
        server_parser().feed(encode_frame(OP_CONT, b"x", mask=True))
    assert info.value.close_code == 1002


def test_new_data_frame_inside_a_fragmented_message_is_rejected():
    parser = server_parser()
    parser.feed(encode_frame(OP_TEXT, b"a", mask=True, fin=False))
    with pytest.raises(ProtocolError):
        parser.feed(encode_frame(OP_TEXT, b"b", mask=True))


def test_fragmented_control_frame_is_rejected():
    with pytest.raises(ProtocolError):
        server_parser().feed(encode_frame(OP_PING, b"x", mask=True, fin=False))


def test_control_frame_longer_than_125_is_rejected():
    frame = raw_frame(0x80 | OP_PING, b"x" * 126, mask_key=b"\x01\x02\x03\x04")
    with pytest.raises(ProtocolError):
        server_parser().feed(frame)


# Size limit ---------------------------------------------------------------------------------


def test_size_limit_is_enforced_on_the_header_before_the_payload_arrives():
    parser = FrameParser(max_message_size=1 << 20, expect_masked=True)
    header_only = bytes((0x80 | OP_BINARY, 0x80 | 127)) + struct.pack("!Q", 2 << 20)
    assert len(header_only) == 10
    with pytest.raises(MessageTooBig) as info:
        parser.feed(header_only)
    assert info.value.close_code == 1009
    assert isinstance(info.value, ProtocolError) and isinstance(info.value, CrossWSError)


def test_size_limit_with_16_bit_length_header_only():
    parser = FrameParser(max_message_size=1000, expect_masked=False)
    with pytest.raises(MessageTooBig):
        parser.feed(bytes((0x80 | OP_TEXT, 126)) + struct.pack("!H", 1001))


def test_message_exactly_at_the_limit_is_accepted():
    parser = FrameParser(max_message_size=1000, expect_masked=True)
    payload = b"x" * 1000
    assert parser.feed(encode_frame(OP_BINARY, payload, mask=True)) == [(OP_BINARY, payload)]


def test_size_limit_counts_all_fragments_of_a_message():
    parser = FrameParser(max_message_size=10, expect_masked=True)
    assert parser.feed(encode_frame(OP_TEXT, b"123456", mask=True, fin=False)) == []
    with pytest.raises(MessageTooBig):
        parser.feed(encode_frame(OP_CONT, b"12345", mask=True, fin=True)[:2])  # the header alone


def test_size_limit_resets_after_a_complete_fragmented_message():
    parser = FrameParser(max_message_size=10, expect_masked=True)
    parser.feed(encode_frame(OP_TEXT, b"12345", mask=True, fin=False))
    assert parser.feed(encode_frame(OP_CONT, b"67890", mask=True)) == [(OP_TEXT, b"1234567890")]
    assert parser.feed(encode_frame(OP_TEXT, b"abcdefghij", mask=True)) == [(OP_TEXT, b"abcdefghij")]


def test_control_frames_do_not_count_against_the_size_limit():
    parser = FrameParser(max_message_size=4, expect_masked=True)
    assert parser.feed(encode_frame(OP_PING, b"x" * 125, mask=True)) == [(OP_PING, b"x" * 125)]


def test_unlimited_parser_accepts_big_messages():
    payload = os.urandom(3 << 20)
    parser = FrameParser(max_message_size=None, expect_masked=True)
    assert parser.feed(encode_frame(OP_BINARY, payload, mask=True)) == [(OP_BINARY, payload)]


def test_default_limit_is_one_mebibyte():
    parser = FrameParser(expect_masked=False)
    ok = b"x" * (1 << 20)
    assert parser.feed(encode_frame(OP_BINARY, ok)) == [(OP_BINARY, ok)]
    with pytest.raises(MessageTooBig):
        FrameParser(expect_masked=False).feed(encode_frame(OP_BINARY, ok + b"x")[:10])


# Protocol violations ------------------------------------------------------------------------


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
def test_reserved_bits_are_rejected(rsv):
    frame = raw_frame(0x80 | rsv | OP_TEXT, b"hi", mask_key=b"abcd")
    with pytest.raises(ProtocolError) as info:
        server_parser().feed(frame)
    assert info.value.close_code == 1002


def test_unmasked_client_frame_is_rejected_by_the_server():
    with pytest.raises(ProtocolError):
        server_parser().feed(encode_text("hi", mask=False))


def test_masked_server_frame_is_rejected_by_the_client():
    with pytest.raises(ProtocolError):
        client_parser().feed(encode_text("hi", mask=True))


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7])
def test_reserved_data_opcodes_are_rejected(opcode):
    with pytest.raises(ProtocolError):
        server_parser().feed(raw_frame(0x80 | opcode, b"x", mask_key=b"abcd"))


@pytest.mark.parametrize("opcode", [0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_control_opcodes_are_rejected(opcode):
    with pytest.raises(ProtocolError):
        server_parser().feed(raw_frame(0x80 | opcode, b"x", mask_key=b"abcd"))


# Close payloads -----------------------------------------------------------------------------


def test_close_without_payload_is_1005():
    assert parse_close_payload(b"") == (1005, "")


def test_close_with_code_and_reason():
    assert parse_close_payload(struct.pack("!H", 1000) + "bye \u00e9".encode()) == (1000, "bye \u00e9")
    assert parse_close_payload(struct.pack("!H", 4001)) == (4001, "")


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes(code):
    assert parse_close_payload(struct.pack("!H", code) + b"r") == (code, "r")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code):
    with pytest.raises(ProtocolError):
        parse_close_payload(struct.pack("!H", code))


def test_one_byte_close_payload_is_invalid():
    with pytest.raises(ProtocolError):
        parse_close_payload(b"\x03")


def test_close_reason_that_is_not_utf8_is_1007():
    with pytest.raises(ProtocolError) as info:
        parse_close_payload(struct.pack("!H", 1000) + b"\xff\xfe")
    assert info.value.close_code == 1007


@pytest.mark.parametrize("code, reason", [(1000, ""), (1001, "going away"), (4001, "manual \u00e9"), (3000, "x" * 123)])
def test_encode_close_round_trip(code, reason):
    [(opcode, payload)] = server_parser().feed(encode_close(code, reason, mask=True))
    assert opcode == OP_CLOSE
    assert parse_close_payload(payload) == (code, reason)


def test_encode_close_without_code_is_empty():
    assert encode_close(None) == b"\x88\x00"
    [(_, payload)] = client_parser().feed(encode_close(None))
    assert parse_close_payload(payload) == (1005, "")


def test_encode_close_truncates_long_reasons_to_a_valid_control_frame():
    frame = encode_close(1000, "x" * 500)
    [(_, payload)] = client_parser().feed(frame)
    code, reason = parse_close_payload(payload)
    assert code == 1000 and reason == "x" * 123
    assert len(payload) == 125


def test_encode_close_truncation_never_splits_a_utf8_character():
    # 2-byte characters: a cut at 123 bytes would fall inside one and make the reason invalid UTF-8,
    # which the peer (and our own parser) must answer with 1007.
    for reason in ("\u00e9" * 100, "\u2603" * 60, "a" + "\U0001f600" * 40):
        [(_, payload)] = client_parser().feed(encode_close(1000, reason))
        code, parsed = parse_close_payload(payload)
        assert code == 1000
        assert reason.startswith(parsed)
        assert len(payload) <= 125
        assert len(parsed.encode("utf-8")) > 119


# Byte-by-byte and random splits -------------------------------------------------------------


def _stream():
    """A masked client stream with every kind of frame, and the messages it must produce."""
    big = _payload(70000)
    parts = [
        (encode_text("hello", mask=True), [(OP_TEXT, b"hello")]),
        (encode_frame(OP_BINARY, b"", mask=True), [(OP_BINARY, b"")]),
        (encode_frame(OP_BINARY, _payload(300), mask=True), [(OP_BINARY, _payload(300))]),
        (encode_frame(OP_TEXT, b"frag-", mask=True, fin=False), []),
        (encode_frame(OP_PING, b"in-between", mask=True), [(OP_PING, b"in-between")]),
        (encode_frame(OP_CONT, b"ment", mask=True), [(OP_TEXT, b"frag-ment")]),
        (encode_frame(OP_BINARY, big, mask=True), [(OP_BINARY, big)]),
        (encode_close(1000, "bye", mask=True), [(OP_CLOSE, b"\x03\xe8bye")]),
    ]
    data = b"".join(p[0] for p in parts)
    expected = [m for p in parts for m in p[1]]
    return data, expected


STREAM, STREAM_MESSAGES = _stream()


def test_all_at_once_feeding():
    assert server_parser().feed(STREAM) == STREAM_MESSAGES


def test_byte_by_byte_feeding_equals_all_at_once():
    parser = server_parser()
    out = []
    for i in range(len(STREAM)):
        out.extend(parser.feed(STREAM[i:i + 1]))
    assert out == STREAM_MESSAGES
    assert parser.buffered == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_random_splits_equal_all_at_once(cuts):
    points = sorted(set(cuts))
    parser = server_parser()
    out = []
    previous = 0
    for point in points + [len(STREAM)]:
        out.extend(parser.feed(STREAM[previous:point]))
        previous = point
    assert out == STREAM_MESSAGES
    assert parser.buffered == 0


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=7))
def test_random_payload_split_in_fixed_chunks(payload, chunk):
    frame = encode_frame(OP_BINARY, payload, mask=True)
    parser = server_parser()
    out = []
    for i in range(0, len(frame), chunk):
        out.extend(parser.feed(frame[i:i + chunk]))
    assert out == [(OP_BINARY, payload)]


def test_feed_accepts_bytearray_and_memoryview():
    frame = encode_text("abc", mask=True)
    assert server_parser().feed(bytearray(frame)) == [(OP_TEXT, b"abc")]
    parser = server_parser()
    assert parser.feed(memoryview(frame)[:4]) == []
    assert parser.feed(memoryview(frame)[4:]) == [(OP_TEXT, b"abc")]


def _masked_text_frame(payload, length_field):
    """A masked text frame whose length is written in a 7-, 16- or 64-bit field (non-minimal allowed)."""
    mask = os.urandom(4)
    if length_field == 7:
        header = bytes((0x81, 0x80 | len(payload)))
    elif length_field == 16:
        header = bytes((0x81, 0xFE)) + struct.pack("!H", len(payload))
    else:
        header = bytes((0x81, 0xFF)) + struct.pack("!Q", len(payload))
    return header + mask + unmask(payload, mask)


@pytest.mark.parametrize("length_field,length", [(7, 0), (7, 1), (7, 125), (16, 5), (16, 126), (16, 127), (16, 1030),
                                                 (16, 65535), (64, 119), (64, 300)])
def test_a_whole_masked_text_frame_in_one_read_with_any_length_field(length_field, length):
    # (64, 119) is 133 bytes on the wire: its second byte 0xFF must not pass for a 7-bit length
    payload = os.urandom(length)
    frame = _masked_text_frame(payload, length_field)
    assert server_parser(max_message_size=None).feed(frame) == [(OP_TEXT, payload)]
    parser = server_parser(max_message_size=None)
    assert parser.feed(frame[:3]) == []
    assert parser.feed(frame[3:]) == [(OP_TEXT, payload)]


def _unmasked_text_frame(payload, length_field):
    """An unmasked (server) text frame whose length is written in a 7-, 16- or 64-bit field."""
    if length_field == 7:
        return bytes((0x81, len(payload))) + payload
    if length_field == 16:
        return bytes((0x81, 0x7E)) + struct.pack("!H", len(payload)) + payload
    return bytes((0x81, 0x7F)) + struct.pack("!Q", len(payload)) + payload


@pytest.mark.parametrize("length_field,length", [(7, 0), (7, 1), (7, 125), (16, 5), (16, 124), (16, 126),
                                                 (16, 65535), (64, 119), (64, 300)])
def test_a_whole_unmasked_text_frame_in_one_read_with_any_length_field(length_field, length):
    # (64, 119) is 129 bytes on the wire and (16, 124) 128: their second byte (127, 126) must
    # not pass for a 7-bit length equal to the rest of the read
    payload = os.urandom(length)
    frame = _unmasked_text_frame(payload, length_field)
    assert client_parser().feed(frame) == [(OP_TEXT, payload)]
    assert client_parser().feed(bytearray(frame)) == [(OP_TEXT, payload)]
    parser = client_parser()
    assert parser.feed(frame[:1]) == []
    assert parser.feed(frame[1:]) == [(OP_TEXT, payload)]


def test_a_whole_16_bit_frame_over_the_limit_is_refused_in_one_read():
    frame = _masked_text_frame(b"x" * 201, 16)
    with pytest.raises(MessageTooBig):
        server_parser(max_message_size=200).feed(frame)
    assert server_parser(max_message_size=201).feed(frame) == [(OP_TEXT, b"x" * 201)]


# unmask -------------------------------------------------------------------------------------


def _naive_unmask(payload, mask):
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_unmask_equals_naive_xor(payload, mask):
    assert unmask(payload, mask) == _naive_unmask(payload, mask)
    assert unmask(bytearray(payload), mask) == _naive_unmask(payload, mask)
    assert unmask(memoryview(payload), mask) == _naive_unmask(payload, mask)


@pytest.mark.parametrize("length", [1, 3, 4, 5, 1023, 1024, 1025, 1027, 1028, 1029, 4099])
def test_unmask_at_the_word_and_table_boundaries(length):
    payload, mask = os.urandom(length), os.urandom(4)
    assert unmask(payload, mask) == _naive_unmask(payload, mask)


def test_unmask_keeps_leading_zero_bytes_and_is_an_involution():
    payload = b"\x00\x00\x00" + os.urandom(1021)
    mask = b"\x00\x00\x00\x00"
    assert unmask(payload, mask) == payload
    mask = os.urandom(4)
    assert unmask(unmask(payload, mask), mask) == payload
    assert unmask(b"", mask) == b""


# Handshake keys -----------------------------------------------------------------------------


def test_accept_key_of_the_rfc_6455_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_new_client_key_is_16_random_bytes_base64():
    keys = {new_client_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16


def test_opcode_constants():
    assert (frames.OP_CONT, frames.OP_TEXT, frames.OP_BINARY) == (0, 1, 2)
    assert (frames.OP_CLOSE, frames.OP_PING, frames.OP_PONG) == (8, 9, 10)


# The one-small-masked-text-frame fast path must behave exactly as the general parser --------

@given(st.binary(min_size=1, max_size=125))
def test_single_small_masked_text_frame_equals_the_general_path(payload):
    frame = frames.encode_frame(frames.OP_TEXT, payload, mask=True)
    whole = FrameParser(None, expect_masked=True).feed(frame)
    split = FrameParser(None, expect_masked=True)
    pieces = split.feed(frame[:3]) + split.feed(frame[3:])  # forced through the general loop
    assert whole == pieces == [(frames.OP_TEXT, payload)]


def test_small_text_frame_over_a_tiny_limit_is_still_refused():
    frame = frames.encode_frame(frames.OP_TEXT, b"x" * 20, mask=True)
    with pytest.raises(MessageTooBig):
        FrameParser(10, expect_masked=True).feed(frame)


def test_small_text_frame_inside_a_fragmented_message_is_still_refused():
    parser = FrameParser(None, expect_masked=True)
    assert parser.feed(frames.encode_frame(frames.OP_TEXT, b"part", mask=True, fin=False)) == []
    with pytest.raises(ProtocolError):
        parser.feed(frames.encode_frame(frames.OP_TEXT, b"whole", mask=True))


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536])
def test_text_frame_from_bytes_is_the_general_encoding(length):
    payload = b"y" * length
    assert frames.encode_text_bytes(payload) == frames.encode_frame(frames.OP_TEXT, payload)



def _raw_fragment(opcode, payload, fin):
    key = b"\x01\x02\x03\x04"
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + key + frames.unmask(payload, key)


def test_a_fragmented_text_message_fails_as_soon_as_its_utf8_is_invalid():
    parser = frames.FrameParser()
    assert parser.feed(_raw_fragment(frames.OP_TEXT, "héllo ".encode(), False)) == []
    split = "€".encode()  # a character cut across fragments is fine
    assert parser.feed(_raw_fragment(frames.OP_CONT, split[:1], False)) == []
    assert parser.feed(_raw_fragment(frames.OP_CONT, split[1:], False)) == []
    with pytest.raises(ProtocolError) as info:
        parser.feed(_raw_fragment(frames.OP_CONT, b"\xff more to come", False))  # not the last fragment
    assert info.value.close_code == 1007


def test_a_fragmented_binary_message_may_hold_any_bytes():
    parser = frames.FrameParser()
    assert parser.feed(_raw_fragment(frames.OP_BINARY, b"\xff\xfe", False)) == []
    assert parser.feed(_raw_fragment(frames.OP_CONT, b"\x80", True)) == [(frames.OP_BINARY, b"\xff\xfe\x80")]
