"""crossws_sync.wire.events: the client <-> server JSON frames (pure), byte for byte against the original's probed frames."""
import re

import pytest

from crossws_sync.wire import events as protocol
from crossws_sync.errors import CrossWSError, ProtocolError
from crossws_sync.wire.events import (
    MAX_ACK_ID_LENGTH,
    MAX_CALLBACK_ID_LENGTH,
    MISSING,
    decode_client_frame,
    decode_client_message,
    decode_server_frame,
    decode_server_message,
    encode_ack,
    encode_answer,
    encode_event,
    encode_request,
    encode_server_request,
    is_event_text,
    new_client_callback_id,
)


@pytest.fixture(params=["default", "ujson"], autouse=True)
def json_backend(request, monkeypatch):
    """Run every test with the default encoder (orjson when installed) and with the ujson fallback."""
    if request.param == "ujson":
        monkeypatch.setenv("CROSSWS_JSON", "ujson")
        dumps, dumps_bytes = protocol._make_dumps()
        monkeypatch.setattr(protocol, "dumps", dumps)
        monkeypatch.setattr(protocol, "dumps_bytes", dumps_bytes)
        monkeypatch.setattr(protocol, "loads", protocol._make_loads())
        assert protocol.dumps.__name__ == "ujson_dumps" and protocol.dumps_bytes.__name__ == "ujson_dumps_bytes"
    return request.param


# Literal frames of the original's frames -----------------------------------------------------------------


def test_request_frame_literal():
    frame = encode_request("say", {"msg": "with cb"}, "mwwqqd9p-zx2w-1")
    assert frame == '{"event":"say","payload":{"msg":"with cb"},"callbackId":"mwwqqd9p-zx2w-1"}'


def test_ack_frame_literal():
    frame = encode_ack("mwwqqd9p-zx2w-1", {"ok": True, "echo": {"msg": "with cb"}})
    assert frame == '{"payload":{"ok":true,"echo":{"msg":"with cb"}},"callbackId":"mwwqqd9p-zx2w-1"}'


def test_fire_and_forget_and_push_literals():
    assert encode_event("say", {"msg": "hi"}) == '{"event":"say","payload":{"msg":"hi"}}'
    assert encode_event("hello", {"a": 1}) == '{"event":"hello","payload":{"a":1}}'


def test_missing_payload_is_omitted_like_undefined():
    assert encode_event("ping") == '{"event":"ping"}'
    assert encode_event("ping", MISSING) == '{"event":"ping"}'
    assert encode_ack("cb-1") == '{"callbackId":"cb-1"}'
    assert encode_ack("cb-1", MISSING) == '{"callbackId":"cb-1"}'
    assert encode_request("say", MISSING, "cb-1") == '{"event":"say","callbackId":"cb-1"}'


def test_none_is_null_not_undefined():
    assert encode_event("e", None) == '{"event":"e","payload":null}'
    assert encode_ack("cb", None) == '{"payload":null,"callbackId":"cb"}'


def test_falsy_payloads_are_kept():
    assert encode_event("e", 0) == '{"event":"e","payload":0}'
    assert encode_event("e", "") == '{"event":"e","payload":""}'
    assert encode_event("e", False) == '{"event":"e","payload":false}'
    assert encode_event("e", []) == '{"event":"e","payload":[]}'
    assert encode_ack("cb", {}) == '{"payload":{},"callbackId":"cb"}'


def test_missing_sentinel_is_falsy_and_named():
    assert not MISSING
    assert repr(MISSING) == "MISSING"


def test_no_escaped_slashes_and_non_ascii_kept():
    payload = {"url": "http://a.b/c</script>", "text": "h\u00e9llo \u2603 \U0001f600 \u4f60\u597d"}
    frame = encode_event("e", payload)
    assert frame == '{"event":"e","payload":{"url":"http://a.b/c</script>","text":"h\u00e9llo \u2603 \U0001f600 \u4f60\u597d"}}'
    assert "\\/" not in frame and "\\u" not in frame


def test_control_characters_escaped_like_json_stringify():
    assert encode_event("e", 'a"b\\c\nd\te\u0001') == '{"event":"e","payload":"a\\"b\\\\c\\nd\\te\\u0001"}'


def test_nested_values_and_key_order_are_preserved():
    payload = {"z": 1, "a": [1, "two", None, True, {"b": 2.5}], "m": {}}
    assert encode_event("e", payload) == '{"event":"e","payload":{"z":1,"a":[1,"two",null,true,{"b":2.5}],"m":{}}}'


def test_result_objects_encode_as_plain_objects():
    from crossws_sync.results import Result

    assert encode_ack("cb", Result(success=True, data=Result(x=1))) == '{"payload":{"success":true,"data":{"x":1}},"callbackId":"cb"}'


def test_non_string_keys_become_strings_like_json_stringify():
    # JavaScript object keys are always strings; Python dicts with int keys must not crash a send.
    assert encode_event("e", {1: "a", "b": {2: True}}) == '{"event":"e","payload":{"1":"a","b":{"2":true}}}'


def test_round_trip_through_decode():
    payload = {"msg": "h\u00e9", "list": [1, 2, {"deep": None}]}
    assert decode_client_frame(encode_request("say", payload, "id-1")) == ("say", payload, "id-1")
    assert decode_client_frame(encode_event("say", payload)) == ("say", payload, None)
    assert decode_server_frame(encode_ack("id-1", payload)) == (None, payload, "id-1")
    assert decode_server_frame(encode_event("push", payload)) == ("push", payload, None)


# decode_client_frame --------------------------------------------------------------------------


def test_decode_client_frame_of_the_literal_frames():
    assert decode_client_frame('{"event":"say","payload":{"msg":"hi"}}') == ("say", {"msg": "hi"}, None)
    event, payload, callback_id = decode_client_frame(
        '{"event":"say","payload":{"msg":"with cb"},"callbackId":"mwwqqd9p-zx2w-1"}'
    )
    assert (event, payload, callback_id) == ("say", {"msg": "with cb"}, "mwwqqd9p-zx2w-1")


def test_decode_client_frame_missing_payload_is_missing():
    event, payload, callback_id = decode_client_frame('{"event":"x"}')
    assert event == "x" and payload is MISSING and callback_id is None
    assert decode_client_frame('{"event":"x","payload":null}')[1] is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        '{"event":"x",}',
        "[1,2]",
        '"say"',
        "42",
        "null",
        "true",
        "{}",
        '{"payload":{"msg":"hi"}}',
        '{"event":""}',
        '{"event":1}',
        '{"event":null}',
        '{"event":["say"]}',
        '{"event":{"name":"say"}}',
        '{"event":true}',
    ],
)
def test_decode_client_frame_rejects(text):
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(text)
    assert isinstance(info.value, CrossWSError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "callback_id_json",
    ['""', "1", "0", "null", "true", "{}", '["a"]', '"%s"' % ("x" * (MAX_CALLBACK_ID_LENGTH + 1))],
)
def test_decode_client_frame_ignores_invalid_callback_ids(callback_id_json):
    text = '{"event":"say","payload":1,"callbackId":%s}' % callback_id_json
    assert decode_client_frame(text) == ("say", 1, None)


@pytest.mark.parametrize("callback_id", ["a", "mwwqqd9p-zx2w-1", "x" * 64, "\u00e9" * 64])
def test_decode_client_frame_accepts_callback_ids_of_1_to_64_chars(callback_id):
    assert MAX_CALLBACK_ID_LENGTH == 64
    assert decode_client_frame(encode_request("say", 1, callback_id)) == ("say", 1, callback_id)


@pytest.mark.parametrize("name", ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf", "__class__", "__init__"])
def test_prototype_names_are_ordinary_event_names(name):
    text = '{"event":"%s","payload":{"__proto__":{"polluted":1},"constructor":2},"callbackId":"c1"}' % name
    event, payload, callback_id = decode_client_frame(text)
    assert event == name
    assert payload == {"__proto__": {"polluted": 1}, "constructor": 2}
    assert callback_id == "c1"
    assert decode_server_frame('{"event":"%s"}' % name)[0] == name


def test_spoofed_system_event_names_decode_as_plain_strings():
    # Separation of system and client events is the server's job; the codec only reports the name.
    assert decode_client_frame('{"event":"connection","payload":{"url":"/?id=victim"}}')[0] == "connection"


# decode_server_frame --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "garbage", "[]", '"x"', "1", "null"])
def test_decode_server_frame_drops_non_objects(text):
    assert decode_server_frame(text) == (None, MISSING, None)


def test_decode_server_frame_fields():
    assert decode_server_frame('{"payload":{"ok":true},"callbackId":"mwwqqd9p-zx2w-1"}') == (
        None,
        {"ok": True},
        "mwwqqd9p-zx2w-1",
    )
    assert decode_server_frame('{"event":"hello","payload":{"a":1}}') == ("hello", {"a": 1}, None)
    assert decode_server_frame('{"event":"","payload":1}') == (None, 1, None)
    assert decode_server_frame('{"event":5,"callbackId":7}') == (None, MISSING, None)
    assert decode_server_frame('{"event":"x","callbackId":""}') == ("x", MISSING, None)
    assert decode_server_frame("{}") == (None, MISSING, None)


# Server requests and answers (ours, additive) ------------------------------------------------


def test_server_request_is_an_event_frame_with_the_ack_id_last():
    text = encode_server_request(encode_event("confirm", {"q": "ok?"}), "k3")
    assert text == '{"event":"confirm","payload":{"q":"ok?"},"ackId":"k3"}'
    assert encode_server_request(encode_event("ping"), "1") == '{"event":"ping","ackId":"1"}'
    # What the original client reads: an event (no callbackId, so never taken for an ack).
    assert decode_server_frame(text) == ("confirm", {"q": "ok?"}, None)
    assert decode_server_message(text) == ("confirm", {"q": "ok?"}, None, "k3")


@pytest.mark.parametrize("text", [None, 1, "", "{}", '{"payload":1}', '["event"]', '{"event":"x"', ' {"event":"x"}'])
def test_server_request_refuses_what_is_not_an_event_frame(text):
    assert not is_event_text(text)
    with pytest.raises(ValueError):
        encode_server_request(text, "k1")


def test_answer_frames():
    assert encode_answer("k3", {"yes": True}) == '{"ackId":"k3","payload":{"yes":true}}'
    assert encode_answer("k3") == '{"ackId":"k3"}'
    assert encode_answer("k3", None) == '{"ackId":"k3","payload":null}'
    assert decode_client_message(encode_answer("k3", [1, 2])) == (None, [1, 2], "k3")
    assert decode_client_message('{"ackId":"k3"}') == (None, MISSING, "k3")
    # An event frame that also carries an ackId is an event: a client cannot ask the server.
    assert decode_client_message('{"event":"say","payload":1,"ackId":"k3"}') == ("say", 1, None)
    # The original's frames decode as before.
    assert decode_client_message(encode_request("say", 1, "c1")) == ("say", 1, "c1")


@pytest.mark.parametrize("ack_id_json", ['""', "1", "null", "true", "{}", '["a"]', '"%s"' % ("x" * (MAX_ACK_ID_LENGTH + 1))])
def test_answer_frames_with_an_invalid_ack_id_are_protocol_errors(ack_id_json):
    with pytest.raises(ProtocolError):
        decode_client_message('{"ackId":%s,"payload":1}' % ack_id_json)


@pytest.mark.parametrize("text", ['{"event":null,"ackId":"k1"}', '{"event":"","ackId":"k1"}', '{"payload":1}'])
def test_frames_with_a_bad_event_are_not_answers(text):
    with pytest.raises(ProtocolError):
        decode_client_message(text)


def test_decode_client_frame_still_refuses_answer_frames():
    with pytest.raises(ProtocolError):
        decode_client_frame(encode_answer("k3", 1))


@pytest.mark.parametrize("ack_id_json", ['""', "1", "null", '"%s"' % ("x" * 65)])
def test_decode_server_message_ignores_invalid_ack_ids(ack_id_json):
    assert decode_server_message('{"event":"x","payload":1,"ackId":%s}' % ack_id_json) == ("x", 1, None, None)


# Client callback ids ---------------------------------------------------------------------------

CALLBACK_ID_SHAPE = re.compile(r"^[0-9a-z]+-[0-9a-z]{4}-[0-9a-z]+$")


def test_new_client_callback_id_shape():
    callback_id = new_client_callback_id()
    assert CALLBACK_ID_SHAPE.match(callback_id), callback_id
    ms36, _, counter36 = callback_id.split("-")
    import time

    assert abs(int(ms36, 36) - time.time() * 1000) < 60_000
    assert int(counter36, 36) >= 1
    assert len(callback_id) <= MAX_CALLBACK_ID_LENGTH


def test_new_client_callback_ids_are_unique_and_counted():
    ids = [new_client_callback_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    assert all(CALLBACK_ID_SHAPE.match(i) for i in ids)
    counters = [int(i.rsplit("-", 1)[1], 36) for i in ids]
    assert counters == list(range(counters[0], counters[0] + 10_000))


def test_base36_matches_javascript_to_string_36():
    assert protocol.base36(0) == "0"
    assert protocol.base36(35) == "z"
    assert protocol.base36(36) == "10"
    # (1700000000000).toString(36) in JavaScript
    assert protocol.base36(1700000000000) == "loyw3v28"


@pytest.mark.parametrize("payload", [MISSING, None, {"ok": True}, {"msg": "héllo ✓ \u2028"}, {1: "int key"}, [1, 2.5, "x"]])
def test_ack_bytes_are_the_ack_text_in_utf8(payload):
    from crossws_sync.wire.events import encode_ack_bytes

    assert encode_ack_bytes("cb-9", payload) == encode_ack("cb-9", payload).encode("utf-8")


NON_FINITE = [float("nan"), float("inf"), float("-inf")]


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_non_finite_floats_are_written_as_null_like_json_stringify(value):
    # JSON.stringify writes null for them; NaN / Infinity would make JSON.parse throw on the peer.
    payload = {"x": value, "list": [1.5, value, (value,)], "deep": {"y": [{"z": value}]}}
    expected_payload = '{"x":null,"list":[1.5,null,[null]],"deep":{"y":[{"z":null}]}}'
    assert encode_event("e", payload) == '{"event":"e","payload":%s}' % expected_payload
    assert encode_request("e", value, "cb1") == '{"event":"e","payload":null,"callbackId":"cb1"}'
    assert encode_ack("cb1", [value]) == '{"payload":[null],"callbackId":"cb1"}'
    assert protocol.encode_ack_bytes("cb1", value) == b'{"payload":null,"callbackId":"cb1"}'
    assert decode_client_frame(encode_event("e", payload))[1] == {
        "x": None, "list": [1.5, None, [None]], "deep": {"y": [{"z": None}]}}


def test_finite_floats_and_the_callers_object_are_untouched():
    payload = {"x": [float("nan"), 0.1, 2.5, 3]}
    assert encode_event("e", payload) == '{"event":"e","payload":{"x":[null,0.1,2.5,3]}}'
    assert payload["x"][1:] == [0.1, 2.5, 3] and payload["x"][0] != payload["x"][0]
