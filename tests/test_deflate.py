"""permessage-deflate (crossws_sync.deflate): negotiation and compression, pure; then end to end."""
from __future__ import annotations

import os
import zlib

import pytest

from crossws_sync.wire import frames
from crossws_sync.wire.deflate import (
    Agreement, DeflateOptions, PerMessageDeflate, accept, client_offer, negotiate, options_from, parse_header,
)
from crossws_sync.errors import ConfigError, HandshakeError, MessageTooBig, ProtocolError


def test_options():
    assert options_from(False) is None and options_from(None) is None
    assert options_from(True) == DeflateOptions()
    assert options_from({"threshold": 0, "server_max_window_bits": 10}).server_max_window_bits == 10
    for bad in ({"nope": 1}, {"client_max_window_bits": 8}, {"level": 12}, "yes"):
        with pytest.raises(ConfigError):
            options_from(bad)


def test_header_parsing():
    assert parse_header('permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits="10"') == [
        ("permessage-deflate", {"client_max_window_bits": None}), ("permessage-deflate", {"server_max_window_bits": "10"})]


@pytest.mark.parametrize("offer, expected", [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", "permessage-deflate"),
    ("permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
    ("x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover"),
    ("permessage-deflate; unknown=1, permessage-deflate", "permessage-deflate"),
])
def test_the_server_accepts_the_first_offer_it_can_honour(offer, expected):
    assert negotiate(offer, DeflateOptions()).header() == expected


@pytest.mark.parametrize("offer", ["permessage-deflate; server_max_window_bits=8", "permessage-deflate; unknown",
                                   "x-webkit-deflate-frame", "permessage-deflate; client_max_window_bits=7"])
def test_offers_the_server_cannot_honour_are_declined(offer):
    assert negotiate(offer, DeflateOptions()) is None


def test_the_client_checks_the_servers_answer():
    options = DeflateOptions()
    assert "client_max_window_bits" in client_offer(options)
    assert accept(None, options) is None
    assert accept("permessage-deflate; server_max_window_bits=12", options).server_max_window_bits == 12
    for answer in ("x-other", "permessage-deflate, permessage-deflate", "permessage-deflate; bogus"):
        with pytest.raises(HandshakeError):
            accept(answer, options)


@pytest.mark.parametrize("takeover", [False, True])
def test_compression_round_trips_with_and_without_context_takeover(takeover):
    agreement = Agreement(takeover, takeover, 12, 11)
    server = PerMessageDeflate(agreement, True, DeflateOptions(), 1 << 20)
    client = PerMessageDeflate(agreement, False, DeflateOptions(), 1 << 20)
    for message in (b"hello " * 100, os.urandom(3000), b"", b"hello " * 100):
        assert client.decompress(server.compress(message)) == message
        assert server.decompress(client.compress(message)) == message


def test_a_zip_bomb_is_refused_at_the_size_limit():
    agreement = Agreement(False, False, 15, 15)
    sender = PerMessageDeflate(agreement, False, DeflateOptions(), None)
    receiver = PerMessageDeflate(agreement, True, DeflateOptions(), 1 << 16)
    bomb = sender.compress(bytes(50 << 20))
    assert len(bomb) < 100 << 10
    with pytest.raises(MessageTooBig):
        receiver.decompress(bomb)
    with pytest.raises(ProtocolError) as info:
        PerMessageDeflate(agreement, True, DeflateOptions(), 1 << 16).decompress(b"\xff\xff not deflate")
    assert info.value.close_code == 1007


def test_frames_are_recompressed_only_when_whole_data_and_over_the_threshold():
    pmd = PerMessageDeflate(Agreement(True, True, 15, 15), True, DeflateOptions(), None)
    big = frames.encode_text("x" * 2000)
    packed = frames.recompress(big, pmd.compress, 1024, mask=False)
    assert packed[0] == 0xC1 and len(packed) < 100
    small = frames.encode_text("x" * 10)
    assert frames.recompress(small, pmd.compress, 1024, mask=False) is small
    ping = frames.encode_frame(frames.OP_PING, b"x" * 100)
    assert frames.recompress(ping, pmd.compress, 0, mask=False) is ping
    masked = frames.encode_frame(frames.OP_BINARY, b"y" * 2000, mask=True)
    parser = frames.FrameParser(None, expect_masked=True, inflate=lambda data: zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff"))
    assert parser.feed(frames.recompress(masked, pmd.compress, 0, mask=True)) == [(frames.OP_BINARY, b"y" * 2000)]


def test_rsv1_without_negotiation_or_on_control_frames_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        frames.FrameParser(None, expect_masked=False).feed(b"\xc1\x00")
    with pytest.raises(ProtocolError):
        frames.FrameParser(None, expect_masked=False, inflate=lambda d: d).feed(b"\xc9\x00")  # ping with RSV1


def test_server_and_python_client_negotiate_and_compress_both_ways():
    from gevent import sleep  # noqa: F401 - the suite is monkey-patched in conftest

    from crossws_sync import WebSocketConnector, WebSocketCrossServerAdapter
    from support import wait_for

    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0},
                                          per_message_deflate={"threshold": 64})
    seen = []
    adapter.on_websocket_event("message", lambda socket_, data: (seen.append(data), socket_.send(data)))
    adapter.start()
    client = WebSocketConnector("ws://127.0.0.1:%d/" % adapter.port, per_message_deflate=True)
    got = []
    client.on("message", got.append)
    try:
        assert client.wait_connected(5)
        assert client._session.conn.proto.compressing  # the server agreed
        text, blob = "compress me " * 500, os.urandom(500) + bytes(5000)
        client.send(text)
        client.send(blob)
        wait_for(lambda: text in got and blob in got)
        assert seen[:2] == [text, blob]
        plain = WebSocketConnector("ws://127.0.0.1:%d/" % adapter.port)  # no offer: no compression
        try:
            assert plain.wait_connected(5) and not plain._session.conn.proto.compressing
        finally:
            plain.manual_close()
    finally:
        client.manual_close()
        adapter.close(timeout=1)
