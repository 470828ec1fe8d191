"""The client side of the upgrade (pure): the original's query string, URL checks, handshake."""
import pytest

from crossws_sync import frames
from crossws_sync.errors import ConfigError, HandshakeError
from crossws_sync.upgrade import (
    build_connect_url,
    check_handshake_response,
    handshake_request,
    header_pairs,
    js_string,
    parse_ws_url,
)


def test_query_string_matches_the_probed_original():
    # the original: request line path /chat?id=u1&token=t+k&arr=1%2C2 and /?x=1&id=u2
    assert (build_connect_url("ws://127.0.0.1:9101/chat", {"id": "u1", "token": "t k", "arr": [1, 2]})
            == "ws://127.0.0.1:9101/chat?id=u1&token=t+k&arr=1%2C2")
    assert build_connect_url("ws://127.0.0.1:9102/?x=1", {"id": "u2"}) == "ws://127.0.0.1:9102/?x=1&id=u2"
    assert build_connect_url("ws://h/", {}) == "ws://h/"
    assert build_connect_url("ws://h/", None) == "ws://h/"


@pytest.mark.parametrize("value, text", [
    (True, "true"), (False, "false"), (None, "null"), ({"a": 1}, "[object Object]"),
    ([1, None, [2, 3], "x"], "1,,2,3,x"), (1.0, "1"), (1.5, "1.5"), (-0.25, "-0.25"), (1e21, "1e+21"),
    (1e20, "100000000000000000000"), (1e-7, "1e-7"), (0.000001, "0.000001"), (123456789.125, "123456789.125"),
    (float("nan"), "NaN"), (float("inf"), "Infinity"), (7, "7"), ("s", "s"),
])
def test_js_string(value, text):
    assert js_string(value) == text


def test_form_encoding_is_urlsearchparams():
    # URLSearchParams escapes "~" and keeps "*-._"; space is "+"; UTF-8 percent-encoded.
    url = build_connect_url("ws://h/", {"k": "a~b*c-d.e_f g/é&=", "n": 1.0, "b": True, "z": None})
    assert url == "ws://h/?k=a%7Eb*c-d.e_f+g%2F%C3%A9%26%3D&n=1&b=true&z=null"


@pytest.mark.parametrize("url, secure, host, port, resource, host_header", [
    ("ws://127.0.0.1:9000", False, "127.0.0.1", 9000, "/", "127.0.0.1:9000"),
    ("wss://example.com/chat?x=1", True, "example.com", 443, "/chat?x=1", "example.com"),
    ("WS://example.com:80/a/b", False, "example.com", 80, "/a/b", "example.com"),
    ("ws://[::1]:9001/p", False, "::1", 9001, "/p", "[::1]:9001"),
])
def test_parse_ws_url(url, secure, host, port, resource, host_header):
    target = parse_ws_url(url)
    assert (target.secure, target.host, target.port, target.resource, target.host_header) == (
        secure, host, port, resource, host_header)


@pytest.mark.parametrize("url", ["", "http://h/", "ws:///path", "ws://h:0x1/", "ws://h/#x", "ws://h/#"])
def test_parse_ws_url_rejects(url):
    with pytest.raises(ConfigError):
        parse_ws_url(url)


def test_handshake_request_and_header_pairs():
    request = handshake_request(parse_ws_url("ws://h:81/p?q=1"), "a2V5", header_pairs([("Cookie", "c=1")]))
    assert request == (b"GET /p?q=1 HTTP/1.1\r\nHost: h:81\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: a2V5\r\nSec-WebSocket-Version: 13\r\nCookie: c=1\r\n\r\n")
    own_host = handshake_request(parse_ws_url("ws://h/"), "k", header_pairs({"Host": "other"}))
    assert own_host.count(b"Host:") == 1 and b"Host: other\r\n" in own_host
    for bad in ({"Sec-WebSocket-Key": "x"}, {"X": "a\nb"}, {"bad name": "x"}, {"": "x"}, 5, ["abc"]):
        with pytest.raises(ConfigError):
            header_pairs(bad)
    assert header_pairs(None) == ()


def _answer(key, status="101 Switching Protocols", **overrides):
    fields = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": frames.accept_key(key)}
    fields.update(overrides)
    lines = ["HTTP/1.1 " + status] + ["%s: %s" % item for item in fields.items() if item[1] is not None]
    return "\r\n".join(lines).encode("latin-1")


def test_check_handshake_response():
    key = frames.new_client_key()
    check_handshake_response(_answer(key), key)
    check_handshake_response(_answer(key, Connection="keep-alive, Upgrade", Upgrade="WebSocket"), key)
    with pytest.raises(HandshakeError) as refused:
        check_handshake_response(_answer(key, status="401 Unauthorized"), key)
    assert refused.value.status == 401
    for bad in (_answer(key, **{"Sec-WebSocket-Accept": "nope"}), _answer(key, Upgrade=None),
                _answer(key, Connection="close"), _answer(key, **{"Sec-WebSocket-Extensions": "permessage-deflate"}),
                b"garbage", b"HTTP/1.1 abc"):
        with pytest.raises(HandshakeError):
            check_handshake_response(bad, key)
