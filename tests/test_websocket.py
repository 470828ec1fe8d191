"""The WebSocket protocol of both roles (pure): events, pongs, the close handshake and its codes,
failures, and two protocol objects talking to each other through bytes only."""
import zlib

import pytest

from crossws_sync.wire import frames
from crossws_sync.wire.deflate import DeflateOptions, PerMessageDeflate, accept, client_offer, negotiate
from crossws_sync.errors import MessageTooBig, ProtocolError
from crossws_sync.wire.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, encode_frame
from crossws_sync.wire.websocket import BINARY, CLOSED, CLOSING, OPEN, PING, PONG, TEXT, WebSocketProtocol, sendable_close_code


def server(**kwargs):
    return WebSocketProtocol(client=False, **kwargs)


def client(**kwargs):
    return WebSocketProtocol(client=True, **kwargs)


def from_client(opcode, payload=b"", **kwargs):
    """A frame as a client sends it (masked)."""
    return encode_frame(opcode, payload, mask=True, **kwargs)


def parse_sent(data, *, to_client=True):
    """What one side sent, as (opcode, payload) messages read by the other side's parser."""
    return frames.FrameParser(None, expect_masked=not to_client).feed(data)


def test_data_and_control_events_in_order():
    proto = server()
    data = (from_client(OP_TEXT, "héllo".encode()) + from_client(OP_BINARY, b"\x00\xff")
            + from_client(OP_PING, b"p") + from_client(OP_PONG, b"q"))
    assert proto.receive_data(data) == [(TEXT, "héllo"), (BINARY, b"\x00\xff"), (PING, b"p"), (PONG, b"q")]
    assert parse_sent(proto.data_to_send()) == [(OP_PONG, b"p")]  # the ping's answer, unmasked
    assert proto.data_to_send() == b"" and proto.state == OPEN


def test_the_client_masks_what_it_sends_and_refuses_masked_frames():
    proto = client()
    assert proto.receive_data(encode_frame(OP_PING, b"x")) == [(PING, b"x")]
    assert parse_sent(proto.data_to_send(), to_client=False) == [(OP_PONG, b"x")]
    assert proto.receive_data(encode_frame(OP_TEXT, b"x", mask=True)) == []
    assert proto.state == CLOSED and proto.error is not None and proto.close_code == 1002


def test_a_peer_close_is_echoed_with_its_code_and_ends_the_reading():
    proto = server()
    events = proto.receive_data(from_client(OP_TEXT, b"a") + from_client(OP_CLOSE, b"\x0f\xa1bye") + from_client(OP_TEXT, b"b"))
    assert events == [(TEXT, "a")]
    assert parse_sent(proto.data_to_send()) == [(OP_CLOSE, b"\x0f\xa1")]  # 4001, no reason
    assert proto.state == CLOSED and proto.was_clean
    assert (proto.close_code, proto.close_reason) == (4001, "bye")
    assert proto.receive_data(from_client(OP_TEXT, b"c")) == []  # nothing is read once closed


def test_a_close_without_a_code_is_echoed_empty_and_reported_as_1005():
    proto = client()
    proto.receive_data(encode_frame(OP_CLOSE, b""))
    assert parse_sent(proto.data_to_send(), to_client=False) == [(OP_CLOSE, b"")]
    assert proto.close_code == 1005 and proto.was_clean


def test_our_close_waits_for_the_peers_and_reports_our_code():
    proto = server()
    frame = proto.send_close(4011, "identify timeout")
    assert parse_sent(frame) == [(OP_CLOSE, b"\x0f\xab" + b"identify timeout")]
    assert proto.state == CLOSING and proto.send_close(1000) == b""  # once only
    assert proto.receive_data(from_client(OP_PING, b"late")) == [(PING, b"late")]
    assert proto.data_to_send() == b""  # no pong after our close
    proto.receive_data(from_client(OP_CLOSE, b"\x03\xe8"))
    assert proto.data_to_send() == b""  # already sent ours: no second close
    assert proto.state == CLOSED and proto.was_clean
    assert (proto.close_code, proto.close_reason) == (4011, "identify timeout")


def test_a_peer_that_never_answers_our_close_leaves_it_unclean():
    proto = client()
    proto.send_close(4001, "client manual close")
    proto.receive_eof()
    assert proto.state == CLOSED and not proto.was_clean and proto.close_code == 4001


def test_eof_without_any_close_is_1006():
    proto = server()
    proto.receive_eof()
    assert (proto.close_code, proto.close_reason, proto.was_clean) == (1006, "", False)
    assert proto.receive_data(from_client(OP_TEXT, b"x")) == []


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000, -1])
def test_codes_that_cannot_be_sent_are_refused(code):
    assert not sendable_close_code(code)
    with pytest.raises(ValueError):
        server().send_close(code)


@pytest.mark.parametrize("data, code", [
    (from_client(OP_TEXT, b"\xff"), 1007),  # invalid UTF-8 in a whole message
    (from_client(OP_TEXT, b"ok\xce", fin=False) + from_client(OP_CONT, b"\x28"), 1007),  # fails fast, mid-message
    (from_client(OP_CLOSE, b"\x03"), 1002),  # a one-byte close payload
    (from_client(OP_CLOSE, b"\x03\xed"), 1002),  # 1005 may not be sent
    (from_client(OP_CLOSE, b"\x03\xe8\xff"), 1007),  # a close reason that is not UTF-8
    (encode_frame(OP_TEXT, b"unmasked"), 1002),
    (from_client(OP_CONT, b"x"), 1002),
    (from_client(0x3, b""), 1002),
    (bytes((0xC1, 0x80)) + b"\x00" * 4, 1002),  # RSV1 with no extension negotiated
])
def test_violations_fail_with_the_code_they_call_for(data, code):
    proto = server()
    proto.receive_data(data)
    assert proto.state == CLOSED and isinstance(proto.error, ProtocolError)
    assert proto.close_code == code and not proto.was_clean
    sent = parse_sent(proto.data_to_send())
    assert len(sent) == 1 and frames.parse_close_payload(sent[0][1])[0] == code


def test_an_oversized_message_fails_with_1009():
    proto = server(max_message_size=10)
    proto.receive_data(from_client(OP_TEXT, b"x" * 11))
    assert isinstance(proto.error, MessageTooBig) and proto.close_code == 1009


def test_messages_before_a_violation_in_the_same_read_are_delivered():
    proto = server()
    events = proto.receive_data(from_client(OP_TEXT, b"first") + from_client(OP_PING, b"p") + from_client(0x3))
    assert events == [(TEXT, "first"), (PING, b"p")]
    assert [op for op, _ in parse_sent(proto.data_to_send())] == [OP_PONG, OP_CLOSE]  # in order
    assert proto.close_code == 1002


def test_a_violation_after_our_close_sends_nothing_more():
    proto = server()
    proto.send_close(1001, "going away")
    proto.receive_data(from_client(0x3))
    assert proto.data_to_send() == b"" and proto.state == CLOSED and proto.close_code == 1001


def _pair(options=DeflateOptions(threshold=0)):
    """A client and a server protocol with permessage-deflate negotiated between them."""
    agreement = negotiate(client_offer(options), options)
    accepted = accept(agreement.header(), options)
    srv, cli = server(), client()
    srv.use_deflate(PerMessageDeflate(agreement, True, options, 1 << 20))
    cli.use_deflate(PerMessageDeflate(accepted, False, options, 1 << 20))
    return srv, cli


def test_two_protocols_talk_through_bytes_only_with_compression():
    srv, cli = _pair()
    assert srv.compressing and cli.compressing
    text = "a fairly repetitive message " * 20
    wire = cli.prepare(frames.encode_text(text, mask=True))
    assert wire[0] & 0x40 and len(wire) < len(text)  # RSV1: compressed
    assert srv.receive_data(wire) == [(TEXT, text)]
    back = srv.prepare(frames.encode_data(b"\x00" * 1000))
    assert cli.receive_data(back) == [(BINARY, b"\x00" * 1000)]
    assert cli.receive_data(srv.send_close(1000, "done")) == []
    assert srv.receive_data(cli.data_to_send()) == []
    assert srv.state == cli.state == CLOSED and srv.was_clean and cli.was_clean
    assert srv.close_code == cli.close_code == 1000


def test_without_compression_prepare_is_the_identity():
    proto = client()
    frame = frames.encode_text("x" * 2000, mask=True)
    assert proto.prepare(frame) is frame and not proto.compressing


def test_a_zip_bomb_is_refused_with_1009():
    options = DeflateOptions(threshold=0)
    agreement = negotiate(client_offer(options), options)
    srv = server(max_message_size=1000)
    srv.use_deflate(PerMessageDeflate(agreement, True, options, 1000))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"\x00" * 100_000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    srv.receive_data(encode_frame(OP_BINARY, bomb[:-4], mask=True, rsv1=True))
    assert srv.close_code == 1009 and srv.state == CLOSED
