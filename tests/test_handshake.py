"""The opening handshake of both roles (pure): RFC 6455 §4.1 and §4.2.1."""
import pytest

from crossws_sync.wire import frames
from crossws_sync.errors import HandshakeError
from crossws_sync.wire.handshake import accept_headers, check_handshake_response, check_request, handshake_request, valid_key

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def environ(**overrides):
    env = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "h", "HTTP_UPGRADE": "websocket",
           "HTTP_CONNECTION": "keep-alive, Upgrade", "HTTP_SEC_WEBSOCKET_KEY": KEY, "HTTP_SEC_WEBSOCKET_VERSION": "13"}
    env.update(overrides)
    return {name: value for name, value in env.items() if value is not None}


def test_a_valid_request_is_accepted_with_the_rfc_example_accept_key():
    assert check_request(environ()) is None
    # RFC 6455 §1.3's worked example
    assert accept_headers(environ()) == [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                         ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]
    assert accept_headers(environ(), "permessage-deflate")[-1] == ("Sec-WebSocket-Extensions", "permessage-deflate")


@pytest.mark.parametrize("overrides, status, why", [
    ({"REQUEST_METHOD": "POST"}, 400, "GET"),
    ({"HTTP_CONNECTION": "keep-alive"}, 400, "Connection"),
    ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, 426, "version"),
    ({"HTTP_SEC_WEBSOCKET_KEY": None}, 400, "missing Sec-WebSocket-Key"),
    ({"HTTP_SEC_WEBSOCKET_KEY": "abc"}, 400, "16 bytes"),
    ({"HTTP_SEC_WEBSOCKET_KEY": KEY + "," + KEY}, 400, "16 bytes"),  # two keys, joined by the server
    ({"HTTP_SEC_WEBSOCKET_KEY": "!" * 24}, 400, "16 bytes"),
    ({"SERVER_PROTOCOL": "HTTP/1.0"}, 400, "HTTP/1.1"),
    ({"HTTP_HOST": None}, 400, "Host"),
])
def test_invalid_requests_are_refused_with_the_reason(overrides, status, why):
    refusal = check_request(environ(**overrides))
    assert refusal is not None and refusal[0] == status and why in refusal[1]
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in refusal[2]


def test_valid_key():
    assert valid_key(frames.new_client_key()) and valid_key(KEY)
    assert not valid_key("") and not valid_key("a" * 24) and not valid_key(KEY[:-2])


def test_handshake_request():
    request = handshake_request("/p?q=1", "h:81", "a2V5", (("Cookie", "c=1"),))
    assert request == (b"GET /p?q=1 HTTP/1.1\r\nHost: h:81\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Key: a2V5\r\nSec-WebSocket-Version: 13\r\nCookie: c=1\r\n\r\n")
    own_host = handshake_request("/", "h", "k", (("Host", "other"),))
    assert own_host.count(b"Host:") == 1 and b"Host: other\r\n" in own_host


def _answer(key, status="101 Switching Protocols", **overrides):
    fields = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": frames.accept_key(key)}
    fields.update(overrides)
    lines = ["HTTP/1.1 " + status] + ["%s: %s" % item for item in fields.items() if item[1] is not None]
    return "\r\n".join(lines).encode("latin-1")


def test_check_handshake_response():
    key = frames.new_client_key()
    assert check_handshake_response(_answer(key), key) is None
    check_handshake_response(_answer(key, Connection="keep-alive, Upgrade", Upgrade="WebSocket"), key)
    agreed = _answer(key, **{"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert check_handshake_response(agreed, key, extensions_offered=True) == "permessage-deflate"
    with pytest.raises(HandshakeError) as refused:
        check_handshake_response(_answer(key, status="401 Unauthorized"), key)
    assert refused.value.status == 401
    for bad in (_answer(key, **{"Sec-WebSocket-Accept": "nope"}), _answer(key, Upgrade=None),
                _answer(key, Connection="close"), agreed, b"garbage", b"HTTP/1.1 abc"):
        with pytest.raises(HandshakeError):
            check_handshake_response(bad, key)


def test_the_two_roles_agree():
    """What the client asks for, the server accepts; what the server answers, the client accepts."""
    key = frames.new_client_key()
    request = handshake_request("/chat?id=1", "127.0.0.1:9000", key, ()).decode("latin-1")
    lines = request.split("\r\n")
    env = {"REQUEST_METHOD": lines[0].split()[0], "SERVER_PROTOCOL": lines[0].split()[2]}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(": ")
            env["HTTP_" + name.upper().replace("-", "_")] = value
    assert check_request(env) is None
    answer = "\r\n".join(["HTTP/1.1 101 Switching Protocols"] + ["%s: %s" % h for h in accept_headers(env)])
    assert check_handshake_response(answer.encode("latin-1"), key) is None


def test_a_refusal_keeps_its_retry_after():
    key = frames.new_client_key()
    with pytest.raises(HandshakeError) as refused:
        check_handshake_response(_answer(key, status="503 Service Unavailable", **{"Retry-After": "7"}), key)
    assert refused.value.status == 503 and refused.value.retry_after == 7.0
    with pytest.raises(HandshakeError) as refused:
        check_handshake_response(_answer(key, status="503 Service Unavailable"), key)
    assert refused.value.retry_after is None
