"""crossws_sync.wire.url: Where the client connects (pure): the original's query string, URL checks, extra headers."""
import pytest

from crossws_sync.errors import ConfigError
from crossws_sync.wire.url import build_connect_url, header_pairs, js_string, parse_ws_url


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


def test_header_pairs():
    assert header_pairs([("Cookie", "c=1")]) == (("Cookie", "c=1"),)
    assert header_pairs({"Host": "other"}) == (("Host", "other"),)
    for bad in ({"Sec-WebSocket-Key": "x"}, {"X": "a\nb"}, {"bad name": "x"}, {"": "x"}, 5, ["abc"]):
        with pytest.raises(ConfigError):
            header_pairs(bad)
    assert header_pairs(None) == ()
