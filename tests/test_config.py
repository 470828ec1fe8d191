"""Option validation (pure): ws_options, prefixes, server names and the number/list checkers."""
import dataclasses
import os
import re

import pytest

from crossws_sync.config import (
    WS_OPTION_KEYS,
    ListenOptions,
    as_list,
    check_prefixes,
    parse_ws_options,
    positive_int,
    positive_number,
    resolve_server_name,
)
from crossws_sync.errors import ConfigError, CrossWSError

# parse_ws_options ---------------------------------------------------------------------------------


def test_none_disables_websocket():
    assert parse_ws_options(None) == (None, None)


def test_defaults():
    listen, max_payload = parse_ws_options({})
    assert listen == ListenOptions()
    assert listen.host == "0.0.0.0" and listen.port is None and listen.path is None
    assert listen.no_server is False and listen.ssl_args is None
    assert max_payload is None


def test_all_known_options():
    app = object()
    listen, max_payload = parse_ws_options(
        {"host": "127.0.0.1", "port": 9101, "path": "/ws", "app": app, "backlog": 64, "max_payload": 4096}
    )
    assert listen == ListenOptions(host="127.0.0.1", port=9101, path="/ws", app=app, backlog=64)
    assert max_payload == 4096


def test_original_camel_case_spellings_are_accepted():
    listen, max_payload = parse_ws_options({"noServer": True, "maxPayload": 1024})
    assert listen.no_server is True
    assert max_payload == 1024
    listen, _ = parse_ws_options({"no_server": True})
    assert listen.no_server is True


def test_ssl_arguments():
    context = object()
    assert parse_ws_options({"ssl_context": context})[0].ssl_args == {"ssl_context": context}
    listen, _ = parse_ws_options({"certfile": "c.pem", "keyfile": "k.pem"})
    assert listen.ssl_args == {"certfile": "c.pem", "keyfile": "k.pem"}
    assert parse_ws_options({"keyfile": "k.pem"})[0].ssl_args is None


def test_listen_options_are_frozen():
    listen, _ = parse_ws_options({"port": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        listen.port = 2


@pytest.mark.parametrize("bad", [{"prot": 80}, {"port": 80, "clientTracking": False}, {"Host": "x"}, {"server": None}])
def test_unknown_keys_are_rejected_by_name(bad):
    with pytest.raises(ConfigError) as info:
        parse_ws_options(bad)
    unknown = sorted(set(bad) - WS_OPTION_KEYS)
    for key in unknown:
        assert key in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CrossWSError)


@pytest.mark.parametrize("ws_options", [[("port", 80)], "port=80", 80, True])
def test_non_dict_is_rejected(ws_options):
    with pytest.raises(ConfigError):
        parse_ws_options(ws_options)


@pytest.mark.parametrize("port", [0, 1, 8080, 65535, None])
def test_valid_ports(port):
    assert parse_ws_options({"port": port})[0].port == port


@pytest.mark.parametrize("port", [-1, 65536, 100000, "8080", 80.0, True, False, [80]])
def test_bad_ports(port):
    with pytest.raises(ConfigError, match="port"):
        parse_ws_options({"port": port})


@pytest.mark.parametrize("path", ["/", "/ws", "/a/b?x"])
def test_valid_paths(path):
    assert parse_ws_options({"path": path})[0].path == path


@pytest.mark.parametrize("path", ["", "ws", "chat/", 1, b"/ws"])
def test_bad_paths(path):
    with pytest.raises(ConfigError, match="path"):
        parse_ws_options({"path": path})


@pytest.mark.parametrize("key", ["max_payload", "maxPayload"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "1024", True])
def test_bad_max_payload(key, value):
    with pytest.raises(ConfigError):
        parse_ws_options({key: value})


# check_prefixes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bridge, ws", [("csbp:", "ws:"), ("a:", "b:"), ("bridge", "ws"), ("x:", "y")])
def test_distinct_prefixes_are_accepted(bridge, ws):
    assert check_prefixes(bridge, ws) is None


@pytest.mark.parametrize(
    "bridge, ws",
    [("same:", "same:"), ("ws:", "ws:bridge:"), ("csbp:ws:", "csbp:"), ("a", "ab"), ("ab", "a")],
)
def test_equal_or_mutually_prefixed_prefixes_are_rejected(bridge, ws):
    with pytest.raises(ConfigError) as info:
        check_prefixes(bridge, ws)
    message = str(info.value)
    assert bridge in message and ws in message


@pytest.mark.parametrize("bridge, ws", [("", "ws:"), ("csbp:", ""), (None, "ws:"), ("csbp:", 5)])
def test_empty_or_non_string_prefixes_are_rejected(bridge, ws):
    with pytest.raises(ConfigError, match="must be a non-empty string"):
        check_prefixes(bridge, ws)


# resolve_server_name ----------------------------------------------------------------------------------


def test_default_server_name_is_host_and_pid(monkeypatch):
    monkeypatch.delenv("CROSSWS_WORKER_ID", raising=False)
    name = resolve_server_name(None)
    host, pid = name.rsplit("-", 1)
    assert pid == str(os.getpid())
    assert host and "." not in host and len(host) <= 12


def test_placeholders_are_expanded(monkeypatch):
    monkeypatch.setenv("CROSSWS_WORKER_ID", "3")
    name = resolve_server_name("api-{host}-{pid}-w{worker}")
    match = re.fullmatch(r"api-(.+)-(\d+)-w3", name)
    assert match, name
    assert match.group(2) == str(os.getpid())
    assert match.group(1) == resolve_server_name("{host}")


def test_worker_defaults_to_zero(monkeypatch):
    monkeypatch.delenv("CROSSWS_WORKER_ID", raising=False)
    assert resolve_server_name("w{worker}") == "w0"


def test_literal_names_are_kept():
    assert resolve_server_name("node-a") == "node-a"
    assert resolve_server_name("{{literal}}") == "{literal}"


@pytest.mark.parametrize("template", ["node-{id}", "node-{0}", "node-{", "node-}", "{pid!z}", "", 42])
def test_bad_templates_are_config_errors(template):
    with pytest.raises(ConfigError):
        resolve_server_name(template)


# positive_number / positive_int / as_list ----------------------------------------------------------------


def test_positive_number():
    assert positive_number("t", 5) == 5.0 and isinstance(positive_number("t", 5), float)
    assert positive_number("t", 0.25) == 0.25
    assert positive_number("t", None, allow_none=True) is None
    assert positive_number("t", 0, allow_zero=True) == 0.0


@pytest.mark.parametrize("value", [0, -1, -0.5, None, "5", True, float("nan"), [1]])
def test_positive_number_rejects(value):
    with pytest.raises(ConfigError, match="^t "):
        positive_number("t", value)


def test_positive_number_zero_allowed_but_not_negative():
    with pytest.raises(ConfigError, match="non-negative"):
        positive_number("t", -1, allow_zero=True)


def test_positive_int():
    assert positive_int("n", 3) == 3
    assert positive_int("n", None, allow_none=True) is None
    for value in (0, -2, 1.0, "3", True, None):
        with pytest.raises(ConfigError, match="^n must be a positive integer"):
            positive_int("n", value)


def test_as_list():
    assert as_list(None, "x") == []
    assert as_list("game", "x") == ["game"]
    assert as_list(("a", "b"), "x") == ["a", "b"]
    assert as_list(iter(["a"]), "x") == ["a"]
    for bad in (["a", ""], ["a", 1], [None]):
        with pytest.raises(ConfigError, match="^x must contain non-empty strings"):
            as_list(bad, "x")
