"""The name policy (crossws_sync.names): pure, no I/O."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossws_sync.errors import ConfigError, InvalidNameError
from crossws_sync.core.names import (
    check_name, check_namespace, namespace_channel, preset_namespace, reserved_reason, valid_name,
)

SYSTEM_CHANNELS = {"ws:broadcast", "ws:private_socket", "ws:_crossws.cluster", "ws:_crossws.node:A",
                   "csbp:server_bridge", "csbp:A"}


def test_ordinary_names_pass_and_map_as_the_original_does():
    assert check_namespace("chat") == "chat"
    assert namespace_channel("chat") == "ws:chat"
    assert check_name("roomId", "r1") == "r1"
    assert check_name("roomId", "salle-été-🎲") == "salle-été-🎲"


@pytest.mark.parametrize("namespace", [
    "broadcast", "private_socket", "ws:broadcast", "ws:chat", "csbp:server_bridge", "csbp:A",
    "_crossws.node:A", "_crossws.cluster", "_crossws", "ws:_crossws.node:A",
])
def test_reserved_namespaces_are_refused_with_the_reason(namespace):
    with pytest.raises(InvalidNameError, match="reserved"):
        check_namespace(namespace)
    assert reserved_reason(namespace, "ws:", "csbp:")


@pytest.mark.parametrize("value, message", [
    ("\ud800", "surrogate"), ("a\udfffb", "surrogate"), ("x" * 257, "257 bytes"), ("é" * 129, "258 bytes"),
    ("a\x00b", "control"), ("line\nforged", "control"), ("\x7f", "control"),
])
def test_invalid_text_is_refused(value, message):
    with pytest.raises(InvalidNameError, match=message):
        check_name("roomId", value)
    assert not valid_name(value)


def test_limits_are_in_utf8_bytes_and_configurable():
    assert check_name("roomId", "x" * 256) and check_name("roomId", "é" * 128)
    assert check_name("roomId", "x" * 1000, max_bytes=1000)
    with pytest.raises(InvalidNameError):
        check_name("roomId", "x" * 11, max_bytes=10)


@pytest.mark.parametrize("value", [None, "", 3, b"chat", ["chat"]])
def test_non_strings_raise_type_error_like_the_original(value):
    with pytest.raises(TypeError):
        check_name("roomNamespace", value)


def test_invalid_name_error_is_a_config_error_and_a_value_error():
    assert issubclass(InvalidNameError, ConfigError) and issubclass(InvalidNameError, ValueError)


def test_presets_may_carry_the_ws_prefix_as_in_the_original():
    assert preset_namespace("ws:lobby") == "lobby"
    assert preset_namespace("lobby") == "lobby"
    with pytest.raises(InvalidNameError):
        preset_namespace("ws:broadcast")
    with pytest.raises(InvalidNameError):
        preset_namespace("csbp:x")


def test_custom_prefixes_are_honoured():
    assert check_namespace("ws:chat", ws_prefix="app/", bridge_prefix="bridge/") == "ws:chat"
    with pytest.raises(InvalidNameError):
        check_namespace("app/chat", ws_prefix="app/", bridge_prefix="bridge/")


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    st.sampled_from(["broadcast", "private_socket", "_crossws", "ws:", "csbp:"]).flatmap(
        lambda head: st.text(max_size=20).map(lambda tail: head + tail)),
))
def test_no_accepted_namespace_maps_to_a_system_channel_or_breaks_encoding(namespace):
    try:
        name = check_namespace(namespace)
    except (TypeError, InvalidNameError):
        return
    channel = namespace_channel(name)
    assert channel not in SYSTEM_CHANNELS
    assert not channel.startswith(("ws:_crossws", "csbp:", "ws:ws:", "ws:csbp:"))
    assert len(channel.encode("utf-8")) <= 256 + 3


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_the_namespace_to_channel_mapping_is_one_to_one(first, second):
    try:
        a, b = check_namespace(first), check_namespace(second)
    except (TypeError, InvalidNameError):
        return
    assert (namespace_channel(a) == namespace_channel(b)) == (a == b)
