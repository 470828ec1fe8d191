"""Pure tests of crossws_sync.envelope: golden vectors of the original's envelopes, codecs, validators, ids."""
import re

import msgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from crossws_sync.wire import envelope as env
from crossws_sync.wire import events as protocol
from crossws_sync.wire.envelope import EnvelopeCodec
from crossws_sync.errors import ConfigError, EnvelopeError
from crossws_sync.wire.events import MISSING

# Literal decoded examples of the original's envelopes (probed on the original, nodes nodeA / nodeB).
REQUEST_JSON = ('{"data":{"event":"ask","senderServer":"nodeA","payload":{"q":1},"targetServer":["nodeB"],'
                '"callbackId":"nodeA-mwwqqdvs-2sq4-1"}}')
REPLY_JSON = ('{"data":{"event":"_Cs_Cb_","senderServer":"nodeB","targetServer":[],'
              '"callbackId":"nodeA-mwwqqdvs-2sq4-1","isCallback":true,"payload":{"from":"nodeB"}}}')
UNICAST_JSON = '{"data":"{\\"event\\":\\"hello\\",\\"payload\\":{\\"a\\":1}}","socketId":"u2","senderServer":"nodeA"}'
UNICAST_MSGPACK_HEX = ("83a464617461d9237b226576656e74223a2268656c6c6f222c227061796c6f6164223a7b2261223a317d7d"
                       "a8736f636b65744964a27532ac73656e646572536572766572a56e6f646541")
ROOM_JSON = ('{"data":"{\\"event\\":\\"roomEvt\\",\\"payload\\":{\\"c\\":3}}","roomNamespace":"chat","roomId":"r1",'
             '"senderServer":"nodeA","excludeSocketIds":["zzz"]}')
CUSTOM_MSGPACK_HEX = "81a568656c6c6fa178"

JSON = EnvelopeCodec("json", compress_threshold=None)
MSGPACK = EnvelopeCodec("msgpack", compress_threshold=None)


# Golden vectors --------------------------------------------------------------------------------

def test_bridge_request_matches_original_bytes():
    request = env.bridge_request("ask", "nodeA", {"q": 1}, ["nodeB"], "nodeA-mwwqqdvs-2sq4-1")
    assert JSON.encode(request) == REQUEST_JSON.encode()


def test_bridge_reply_matches_original_bytes():
    reply = env.bridge_reply("nodeB", "nodeA-mwwqqdvs-2sq4-1", {"from": "nodeB"})
    assert JSON.encode(reply) == REPLY_JSON.encode()


def test_unicast_matches_original_json_and_msgpack_bytes():
    unicast = env.ws_unicast('{"event":"hello","payload":{"a":1}}', "u2", "nodeA")
    assert JSON.encode(unicast) == UNICAST_JSON.encode()
    assert MSGPACK.encode(unicast).hex() == UNICAST_MSGPACK_HEX


def test_room_matches_original_bytes():
    room = env.ws_room('{"event":"roomEvt","payload":{"c":3}}', "chat", "r1", "nodeA", ["zzz"])
    assert JSON.encode(room) == ROOM_JSON.encode()


def test_custom_message_msgpack_matches_original_bytes():
    assert MSGPACK.encode({"hello": "x"}).hex() == CUSTOM_MSGPACK_HEX


@pytest.mark.parametrize("text", [REQUEST_JSON, REPLY_JSON, UNICAST_JSON, ROOM_JSON])
def test_original_json_vectors_decode_with_both_codecs(text):
    expected = JSON.decode(text.encode())
    assert MSGPACK.decode(text.encode()) == expected
    assert JSON.decode(MSGPACK.encode(expected)) == expected


def test_original_msgpack_vectors_decode_with_json_codec():
    assert JSON.decode(bytes.fromhex(CUSTOM_MSGPACK_HEX)) == {"hello": "x"}
    assert JSON.decode(bytes.fromhex(UNICAST_MSGPACK_HEX)) == {
        "data": '{"event":"hello","payload":{"a":1}}', "socketId": "u2", "senderServer": "nodeA"}


def test_promise_order_puts_payload_first_like_the_original():
    request = env.bridge_request("ask", "nodeA", {"q": 1}, [], "id-1", promise_order=True)
    assert list(request["data"]) == ["payload", "event", "senderServer", "targetServer", "callbackId"]
    assert JSON.encode(request) == b'{"data":{"payload":{"q":1},"event":"ask","senderServer":"nodeA","targetServer":[],"callbackId":"id-1"}}'


def test_missing_payload_is_left_out_like_undefined():
    assert "payload" not in env.bridge_reply("nodeB", "id")["data"]
    assert "payload" not in env.bridge_request("e", "nodeA", MISSING, [])["data"]
    assert "callbackId" not in env.bridge_request("e", "nodeA", 1, [])["data"]


def test_reply_to_is_an_additive_last_field():
    request = env.bridge_request("ask", "nodeA", 1, [], "id", reply_to=env.node_channel("csbp:", "nodeA"))
    assert list(request["data"])[-1] == "replyTo"
    assert request["data"]["replyTo"] == "csbp:node:nodeA"


def test_non_ascii_stays_unescaped_like_json_stringify():
    assert JSON.encode({"t": "é中"}) == '{"t":"é中"}'.encode()


# Channels ----------------------------------------------------------------------------------------

def test_channel_names_match_the_original():
    assert env.bridge_channel("csbp:") == "csbp:server_bridge"
    assert env.private_socket_channel("ws:") == "ws:private_socket"
    assert env.broadcast_channel("ws:") == "ws:broadcast"
    assert env.room_channel("ws:", "csbp:", "lobby") == "ws:lobby"
    assert env.room_channel("ws:", "csbp:", "ws:lobby") == "ws:lobby"
    assert env.room_channel("ws:", "csbp:", "csbp:x") == "csbp:x"


# Codec detection, zstd, signing ------------------------------------------------------------------

def test_detect_format():
    assert env.detect_format(b'{"a":1}') == "json"
    assert env.detect_format(b"\x81\xa1a\x01") == "msgpack"
    assert env.detect_format(zstandard.ZstdCompressor().compress(b"{}")) == "zstd"
    assert env.detect_format(env.sign(b"k", "c", b"{}")) == "signed"


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_zstd_only_above_threshold_and_readable_by_every_codec(codec):
    small = {"data": {"event": "e", "payload": "x" * 10}}
    big = {"data": {"event": "e", "payload": "y" * 5000}}
    encoder = EnvelopeCodec(codec, compress_threshold=1000)
    assert env.detect_format(encoder.encode(small)) == codec
    packed = encoder.encode(big)
    assert env.detect_format(packed) == "zstd"
    assert len(packed) < 1000
    for decoder in (JSON, MSGPACK, encoder):
        assert decoder.decode(packed) == big
        assert decoder.decode(encoder.encode(small)) == small


def test_threshold_none_never_compresses():
    assert env.detect_format(JSON.encode({"p": "z" * 100000})) == "json"


def test_zstd_bomb_is_refused():
    codec = EnvelopeCodec("json", compress_threshold=0, max_decompressed_size=1000)
    bomb = zstandard.ZstdCompressor().compress(b'{"a":"' + b"a" * 100000 + b'"}')
    with pytest.raises(EnvelopeError, match="limit"):
        codec.decode(bomb)
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(b'{"a":"' + b"a" * 100000 + b'"}')
    with pytest.raises(EnvelopeError, match="limit"):
        codec.decode(streamed)


def test_signed_messages_round_trip_and_are_bound_to_the_channel():
    signer = EnvelopeCodec("msgpack", compress_threshold=10, signing_key=b"secret")
    raw = signer.encode({"data": {"event": "e", "payload": "p" * 100}}, "csbp:server_bridge")
    assert raw[0] == 0xC1
    assert signer.decode(raw, "csbp:server_bridge") == {"data": {"event": "e", "payload": "p" * 100}}
    with pytest.raises(EnvelopeError, match="bad signature"):
        signer.decode(raw, "other")
    with pytest.raises(EnvelopeError, match="bad signature"):
        EnvelopeCodec("json", signing_key=b"other-secret").decode(raw, "csbp:server_bridge")
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(EnvelopeError):
        signer.decode(tampered, "csbp:server_bridge")


def test_unsigned_refused_when_signing_and_signed_refused_without_key():
    signer = EnvelopeCodec("json", signing_key=b"secret")
    with pytest.raises(EnvelopeError, match="unsigned"):
        signer.decode(b'{"a":1}', "c")
    with pytest.raises(EnvelopeError, match="no signing_key"):
        JSON.decode(signer.encode({"a": 1}, "c"), "c")


@pytest.mark.parametrize("garbage", [b"", b"hello", b"{not json", b"\xc1", b"\x28\xb5\x2f\xfdxxxx", b"\x92\x01"])
def test_garbage_raises_envelope_error(garbage):
    with pytest.raises(EnvelopeError):
        JSON.decode(garbage)


def test_unencodable_message_raises_envelope_error():
    with pytest.raises(EnvelopeError):
        JSON.encode({"x": object()})
    with pytest.raises(EnvelopeError):
        MSGPACK.encode({"x": object()})


def test_codec_options_are_validated():
    with pytest.raises(ConfigError):
        EnvelopeCodec("pickle")
    with pytest.raises(ConfigError):
        EnvelopeCodec("json", compress_threshold=-1)
    with pytest.raises(ConfigError):
        EnvelopeCodec("json", signing_key=b"")
    assert "secret" not in repr(EnvelopeCodec("json", signing_key=b"secret"))


def test_original_compression_option_maps_to_plain_codecs():
    on = env.codec_from_options(enable_redis_data_compression=True)
    off = env.codec_from_options(enable_redis_data_compression=False, redis_codec="msgpack")
    assert (on.codec, on.compress_threshold) == ("msgpack", None)
    assert (off.codec, off.compress_threshold) == ("json", None)
    default = env.codec_from_options()
    # the original's default (enableRedisDataCompression: true); zstd is opt-in: Node nodes cannot read it
    assert (default.codec, default.compress_threshold) == ("msgpack", None)
    assert EnvelopeCodec().codec == "msgpack"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 53, 2 ** 53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(payload=json_values, threshold=st.sampled_from([None, 0, 64]), codec=st.sampled_from(["json", "msgpack"]))
def test_any_json_payload_round_trips_across_codecs(payload, threshold, codec):
    message = env.bridge_request("evt", "nodeA", payload, ["nodeB"], "id")
    encoded = EnvelopeCodec(codec, compress_threshold=threshold).encode(message)
    assert JSON.decode(encoded) == message
    assert MSGPACK.decode(encoded) == message


# Validators --------------------------------------------------------------------------------------

def test_parse_bridge_classifies_requests_and_replies():
    assert env.parse_bridge(JSON.decode(REQUEST_JSON.encode()))[0] == "request"
    kind, data = env.parse_bridge(JSON.decode(REPLY_JSON.encode()))
    assert kind == "reply" and data["senderServer"] == "nodeB"


@pytest.mark.parametrize("bad", [
    None, [], {"data": "x"}, {"data": {"event": "", "targetServer": []}},
    {"data": {"event": "e", "targetServer": "nodeB"}}, {"data": {"event": "e", "targetServer": [], "callbackId": 5}},
    {"data": {"isCallback": True, "callbackId": "id"}},
])
def test_parse_bridge_rejects_malformed(bad):
    with pytest.raises(EnvelopeError):
        env.parse_bridge(bad)


def test_parse_ws_classifies_every_kind():
    frame = '{"event":"e"}'
    assert env.parse_ws(env.ws_unicast(frame, "u1", "n")) == "unicast"
    assert env.parse_ws(env.ws_multicast(frame, ["u1", "u2"], "n")) == "multicast"
    assert env.parse_ws(env.ws_broadcast(frame, "n")) == "broadcast"
    assert env.parse_ws(env.ws_room(frame, "chat", "r1", "n")) == "room"
    both = dict(env.ws_unicast(frame, "u1", "n"), socketIds=["u2"])
    assert env.parse_ws(both) == "multicast"  # socketIds preferred, as the original


@pytest.mark.parametrize("bad", [
    "x", {"data": 1}, {"data": "f", "socketIds": "u1"}, {"data": "f", "socketId": ""},
    {"data": "f", "roomNamespace": "chat"}, {"data": "f", "roomNamespace": "c", "roomId": "r", "excludeSocketIds": "z"},
])
def test_parse_ws_rejects_malformed(bad):
    with pytest.raises(EnvelopeError):
        env.parse_ws(bad)


def test_sender_of_reads_both_places():
    assert env.sender_of({"senderServer": "a"}) == "a"
    assert env.sender_of({"data": {"senderServer": "b"}}) == "b"
    assert env.sender_of({"data": "frame"}) is None
    assert env.sender_of([1]) is None


# Callback ids ------------------------------------------------------------------------------------

def test_callback_ids_are_unique_and_carry_the_whole_server_name():
    first, second = env.CallbackIdFactory("a-long-server-name"), env.CallbackIdFactory("a-long-server-name")
    ids = {first.new() for _ in range(2000)} | {second.new() for _ in range(2000)}
    assert len(ids) == 4000
    assert all(i.startswith("a-long-server-name-") for i in ids)
    assert re.fullmatch(r"nodeA-[0-9a-z]+-[0-9a-z]{6}-1", env.CallbackIdFactory("nodeA").new())
    assert first.token != second.token


def test_envelope_module_is_pure():
    source = open(env.__file__, encoding="utf-8").read()
    assert not re.search(r"^\s*(import|from)\s+(gevent|redis|socket)\b", source, re.M)


# Per-(sender, channel) numbers and gap detection ---------------------------------------------

def test_stamper_numbers_each_channel_from_one_and_keeps_a_stamp_on_republish():
    stamper = env.SequenceStamper()
    stamped = []
    for channel in ("ws:a", "ws:b", "ws:a"):
        message = {"data": "x"}
        stamper.stamp(channel, message)
        stamped.append((message[env.EPOCH_FIELD], message[env.SEQ_FIELD]))
    assert [n for _, n in stamped] == [1, 1, 2] and {e for e, _ in stamped} == {stamper.epoch}
    again = {"data": "y"}
    stamper.stamp("ws:a", again)
    stamper.stamp("ws:a", again)  # re-published after a failed write: same number
    assert again[env.SEQ_FIELD] == 3
    assert env.SequenceStamper().epoch != stamper.epoch  # a restarted sender is a new epoch


def test_stamped_envelopes_still_decode_for_the_original_fields():
    message = env.ws_room("f", "chat", "r1", "A")
    env.SequenceStamper().stamp("ws:chat", message)
    for codec in (JSON, MSGPACK):
        decoded = codec.decode(codec.encode(message))
        assert env.parse_ws(decoded) == "room" and decoded["data"] == "f" and decoded[env.SEQ_FIELD] == 1


def test_stamper_evicting_a_channel_gives_it_a_new_epoch():
    stamper = env.SequenceStamper(max_channels=1)
    first, other, back = {}, {}, {}
    stamper.stamp("ws:a", first)
    stamper.stamp("ws:b", other)
    stamper.stamp("ws:a", back)
    assert back[env.SEQ_FIELD] == 1 and back[env.EPOCH_FIELD] != first[env.EPOCH_FIELD]


def test_gap_detector_counts_skipped_numbers_per_sender_and_channel():
    gaps = env.GapDetector()
    assert [gaps.check("ws:a", "A", "e1", n) for n in (5, 6, 7)] == [0, 0, 0]  # first seen: baseline
    assert gaps.check("ws:b", "A", "e1", 1) == 0  # another channel: its own numbers
    assert gaps.check("ws:a", "B", "e9", 1) == 0  # another sender
    assert gaps.check("ws:a", "A", "e1", 10) == 2 and gaps.missed == 2
    assert gaps.check("ws:a", "A", "e1", 8) == 0 and (gaps.missed, gaps.late) == (1, 1)  # late, taken back
    assert gaps.check("ws:a", "A", "e1", 8) == 0 and (gaps.missed, gaps.late) == (1, 1)  # duplicate: ignored
    assert gaps.check("ws:a", "A", "e2", 1) == 0 and gaps.missed == 1  # restarted sender
    assert gaps.check("ws:a", "A", "e3", 4) == 3 and gaps.missed == 4  # restarted, its first 3 lost
    assert gaps.check("ws:a", "A", "e3", "5") == 0 and gaps.check("ws:a", "A", None, 5) == 0  # malformed
    gaps.forget_channel("ws:a")
    assert gaps.check("ws:a", "A", "e3", 50) == 0 and gaps.missed == 4  # re-subscribed: new baseline


def test_gap_detector_is_bounded():
    gaps = env.GapDetector(max_keys=3, max_skipped=4)
    for n in range(10):
        gaps.check("ws:%d" % n, "A", "e", 1)
    assert gaps._keys == 3
    gaps.check("ws:x", "A", "e", 1)
    gaps.check("ws:x", "A", "e", 100)
    assert gaps.missed == 98
    assert gaps.check("ws:x", "A", "e", 2) == 0 and gaps.missed == 98  # too old to be remembered
    assert gaps.check("ws:x", "A", "e", 99) == 0 and gaps.missed == 97


@pytest.mark.parametrize("backend", ["default", "ujson"])
def test_json_envelopes_write_null_for_nan_and_infinity(backend, monkeypatch):
    if backend == "ujson":
        monkeypatch.setenv("CROSSWS_JSON", "ujson")
        monkeypatch.setattr(protocol, "dumps", protocol._make_dumps()[0])
    message = env.bridge_request("e", "A", {"x": float("nan"), "y": [float("inf"), -float("inf"), 1.5]}, [])
    raw = EnvelopeCodec("json").encode(message)
    assert b"NaN" not in raw and b"Infinity" not in raw
    assert JSON.decode(raw)["data"]["payload"] == {"x": None, "y": [None, None, 1.5]}
    # MessagePack carries floats natively, NaN included, as notepack.io does.
    packed = MSGPACK.decode(MSGPACK.encode({"x": float("nan")}))["x"]
    assert packed != packed


def test_raw_data_carries_bytes_as_msgpack_bin_or_base64_in_json():
    assert env.raw_data("text", "json") == {"data": "text"}
    assert env.raw_data(b"\x00\xff", "msgpack") == {"data": b"\x00\xff"}
    assert env.raw_data(b"\x00\xff", "json") == {"data": "AP8=", "dataEncoding": "base64"}
    assert env.data_of({"data": "AP8=", "dataEncoding": "base64"}) == b"\x00\xff"
    assert env.data_of({"data": "AP8="}) == "AP8="  # the original's text, untouched
    assert env.data_of({"data": b"\x00"}) == b"\x00"
    with pytest.raises(ValueError):
        env.data_of({"data": "not base64!", "dataEncoding": "base64"})
    with pytest.raises(ValueError):
        env.data_of({"data": 5})
