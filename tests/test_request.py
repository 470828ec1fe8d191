"""The upgrade request object and parse_ws_request_params (pure), on the probed examples of the original:."""
import json
from urllib.parse import unquote

import pytest

from crossws_sync import parse_ws_request_params as exported_parse
from crossws_sync.wire.request import Request, parse_ws_request_params


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def environ(path="/", query="", **extra):
    """A WSGI environ as gevent.pywsgi builds it (PATH_INFO unquoted as latin-1, raw QUERY_STRING)."""
    env = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, encoding="latin-1"),
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:9101",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "wsgi.url_scheme": "http",
    }
    env.update(extra)
    return env


# Probed examples of the original ------------------------------------------------------------


def test_probed_example_with_path_and_custom_params():
    result = parse_ws_request_params("/chat?id=u1&token=t+k&arr=1%2C2")
    assert compact(result) == '{"params":{"id":"u1","token":"t k","arr":"1,2"},"path":"chat"}'


def test_probed_example_at_the_root():
    result = parse_ws_request_params("/?x=1&id=u2")
    assert compact(result) == '{"params":{"x":"1","id":"u2"},"path":""}'


def test_probed_examples_from_a_request_and_from_an_environ():
    env = environ("/chat", "id=u1&token=t+k&arr=1%2C2")
    expected = {"params": {"id": "u1", "token": "t k", "arr": "1,2"}, "path": "chat"}
    assert parse_ws_request_params(Request(env)) == expected
    assert parse_ws_request_params(env) == expected
    assert exported_parse is parse_ws_request_params


# Query parameters ---------------------------------------------------------------------------


def test_repeated_keys_become_lists_in_order():
    assert parse_ws_request_params("/?a=1&a=2&b=x&a=3")["params"] == {"a": ["1", "2", "3"], "b": "x"}


def test_empty_values_are_kept_even_first():
    # Documented deviation from the original's quirk (which turned ?a=&a=1 into "1").
    assert parse_ws_request_params("/?a=&a=1")["params"] == {"a": ["", "1"]}
    assert parse_ws_request_params("/?flag&b=")["params"] == {"flag": "", "b": ""}


def test_values_are_decoded_strings():
    params = parse_ws_request_params("/?name=caf%C3%A9&plus=a+b&pct=100%25&obj=%5Bobject+Object%5D&n=null")["params"]
    assert params == {"name": "caf\u00e9", "plus": "a b", "pct": "100%", "obj": "[object Object]", "n": "null"}
    assert all(isinstance(v, str) for v in params.values())


def test_auto_lower_case_keys_merges_case_variants():
    assert parse_ws_request_params("/?ID=1&Token=T")["params"] == {"ID": "1", "Token": "T"}
    result = parse_ws_request_params("/?ID=1&id=2&Token=T", auto_lower_case_keys=True)
    assert result["params"] == {"id": ["1", "2"], "token": "T"}


def test_no_query_gives_empty_params():
    assert parse_ws_request_params("/chat") == {"params": {}, "path": "chat"}
    assert parse_ws_request_params("/chat?") == {"params": {}, "path": "chat"}


# Path ---------------------------------------------------------------------------------------


def test_parse_path_false_gives_none():
    assert parse_ws_request_params("/chat?id=1", parse_path=False) == {"params": {"id": "1"}, "path": None}


def test_leading_slash_handling():
    assert parse_ws_request_params("/chat/room")["path"] == "chat/room"
    assert parse_ws_request_params("/chat/room", auto_remove_leading_slash=False)["path"] == "/chat/room"
    assert parse_ws_request_params("/", auto_remove_leading_slash=False)["path"] == "/"


def test_path_is_percent_decoded():
    assert parse_ws_request_params("/caf%C3%A9/a%20b?x=1")["path"] == "caf\u00e9/a b"


def test_absolute_request_target():
    assert parse_ws_request_params("ws://127.0.0.1:9101/chat?id=u1") == {"params": {"id": "u1"}, "path": "chat"}


@pytest.mark.parametrize("request_value", [None, "", 42])
def test_no_url_gives_empty_params_and_no_path(request_value):
    assert parse_ws_request_params(request_value) == {"params": {}, "path": None}


def test_malformed_target_never_raises():
    assert parse_ws_request_params("//[broken/?a=1") == {"params": {}, "path": None}
    assert parse_ws_request_params("/?%zz=%E9%&&=x")["path"] == ""


# Headers ------------------------------------------------------------------------------------


def test_headers_are_opt_in():
    env = environ("/chat", "id=1", HTTP_ORIGIN="http://example.test")
    assert "headers" not in parse_ws_request_params(Request(env))
    result = parse_ws_request_params(Request(env), include_headers=True)
    assert result["headers"]["origin"] == "http://example.test"
    assert result["headers"]["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert parse_ws_request_params(env, include_headers=True)["headers"]["host"] == "127.0.0.1:9101"
    assert parse_ws_request_params("/chat", include_headers=True)["headers"] == {}


def test_include_headers_returns_a_copy():
    request = Request(environ("/", HTTP_COOKIE="a=1"))
    result = parse_ws_request_params(request, include_headers=True)
    result["headers"]["cookie"] = "changed"
    assert request.headers["cookie"] == "a=1"


# Request ------------------------------------------------------------------------------------


def test_request_from_environ():
    env = environ("/chat", "id=u1&token=secret", HTTP_ORIGIN="http://o.test", HTTP_X_FORWARDED_FOR="10.0.0.1",
                  CONTENT_TYPE="text/plain", REQUEST_METHOD="GET")
    request = Request(env)
    assert request.url == "/chat?id=u1&token=secret"
    assert request.path == "/chat"
    assert request.query_string == "id=u1&token=secret"
    assert request.method == "GET"
    assert request.remote_addr == "127.0.0.1"
    assert request.environ is env
    headers = request.headers
    assert headers["origin"] == "http://o.test"
    assert headers["x-forwarded-for"] == "10.0.0.1"
    assert headers["upgrade"] == "websocket"
    assert headers["content-type"] == "text/plain"
    assert all(name == name.lower() for name in headers)
    assert not any(name.startswith("http_") or "_" in name for name in headers)


def test_request_url_prefers_the_raw_uri_of_the_server():
    env = environ("/chat", "id=1", RAW_URI="/chat?id=1&raw=%2F")
    assert Request(env).url == "/chat?id=1&raw=%2F"
    env = environ("/chat", "id=1", REQUEST_URI="/chat?id=1&req=1")
    assert Request(env).url == "/chat?id=1&req=1"


def test_request_url_rebuilt_from_path_info_keeps_the_original_bytes():
    # gevent.pywsgi gives no raw URI: PATH_INFO is the unquoted path as latin-1 (PEP 3333).
    env = environ("/caf%C3%A9/a%20b", "name=caf%C3%A9")
    request = Request(env)
    assert request.url == "/caf%C3%A9/a%20b?name=caf%C3%A9"
    assert parse_ws_request_params(request) == {"params": {"name": "caf\u00e9"}, "path": "caf\u00e9/a b"}


def test_request_url_includes_script_name():
    env = environ("/chat", "x=1", SCRIPT_NAME="/app")
    assert Request(env).url == "/app/chat?x=1"


def test_request_defaults_for_a_minimal_environ():
    request = Request({})
    assert request.path == "/"
    assert request.url == "/"
    assert request.method == "GET"
    assert request.remote_addr == ""
    assert request.headers == {}
    assert request.cookies == {}


def test_request_repr_hides_the_query_string():
    request = Request(environ("/chat", "id=u1&token=SECRET-TOKEN"))
    text = repr(request)
    assert text == "<Request GET /chat>"
    assert "SECRET-TOKEN" not in text and "token" not in text and "?" not in text
    assert "SECRET-TOKEN" not in str(request)


def test_request_cookies():
    request = Request(environ("/", HTTP_COOKIE='sid=abc123; theme="dark"'))
    assert request.cookies == {"sid": "abc123", "theme": "dark"}


def test_request_url_from_a_hand_built_environ_with_text_path():
    # Not a PEP 3333 native string (a character beyond latin-1): taken as text, encoded as UTF-8.
    request = Request({"PATH_INFO": "/\u2603 x", "QUERY_STRING": "a=1"})
    assert request.url == "/%E2%98%83%20x?a=1"
    assert parse_ws_request_params(request)["path"] == "\u2603 x"


def _fresh(text):
    """A copy of ``text`` that is not the same object (as a parser builds one per request)."""
    return "".join(list(text))


def test_slim_keeps_the_string_variables_and_shares_the_repeated_values():
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
    requests = []
    for key in ("a2V5MQ==", "a2V5Mg=="):
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": _fresh("/ws"), "QUERY_STRING": _fresh("id=1&t=secret"),
               _fresh("HTTP_HOST"): _fresh("example.com"), "HTTP_USER_AGENT": _fresh(agent),
               "HTTP_SEC_WEBSOCKET_KEY": key, "REMOTE_ADDR": _fresh("10.0.0.1"),
               "wsgi.input": object(), "crossws.socket": object(), "SERVER_PORT": 8080}
        request = Request(env)
        assert request.headers["host"] == "example.com"
        request.slim()
        requests.append(request)
    first, second = requests
    assert set(first.environ) == {"REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "HTTP_HOST", "HTTP_USER_AGENT",
                                  "HTTP_SEC_WEBSOCKET_KEY", "REMOTE_ADDR"}
    for name in ("HTTP_HOST", "HTTP_USER_AGENT", "REMOTE_ADDR", "PATH_INFO"):
        assert first.environ[name] is second.environ[name]  # one copy for every connection
    assert first.environ["HTTP_SEC_WEBSOCKET_KEY"] != second.environ["HTTP_SEC_WEBSOCKET_KEY"]
    assert first.path is second.path and first.remote_addr is second.remote_addr
    assert (first.url, first.path, first.query_string, first.method) == ("/ws?id=1&t=secret", "/ws", "id=1&t=secret", "GET")
    assert first.headers == {"host": "example.com", "user-agent": agent, "sec-websocket-key": "a2V5MQ=="}
