"""Pure tests of crossws_sync.wire.envelope: golden vectors of the original's envelopes, validators, ids."""
import re

import pytest

from crossws_sync.wire import envelope as env
from crossws_sync.wire.codec import EnvelopeCodec
from crossws_sync.errors import EnvelopeError
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


# Per-(sender, channel) numbers on envelopes ---------------------------------------------------

def test_stamped_envelopes_still_decode_for_the_original_fields():
    message = env.ws_room("f", "chat", "r1", "A")
    env.SequenceStamper().stamp("ws:chat", message)
    for codec in (JSON, MSGPACK):
        decoded = codec.decode(codec.encode(message))
        assert env.parse_ws(decoded) == "room" and decoded["data"] == "f" and decoded[env.SEQ_FIELD] == 1


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


def test_the_codec_and_sequence_names_are_still_importable_from_envelope():
    from crossws_sync.wire import codec, sequence, signing

    for module, names in ((codec, ["CODECS", "EnvelopeCodec", "codec_from_options", "detect_format", "ZSTD_MAGIC"]),
                          (sequence, ["EPOCH_FIELD", "GapDetector", "SEQ_FIELD", "SequenceStamper"]),
                          (signing, ["sign", "verify"])):
        for name in names:
            assert getattr(env, name) is getattr(module, name), name
    assert all(hasattr(env, name) for name in env.__all__)
