"""Stream ids, bus positions and the client frame's ``_pos`` field (crossws_sync/wire/positions.py)."""
from __future__ import annotations

import json

import pytest

from crossws_sync.wire import positions as p


def test_stream_ids_are_one_to_one_with_what_they_name():
    assert p.room_stream("a:b", "c") != p.room_stream("a", "b:c")
    assert p.stream_room(p.room_stream("chat", "lobby")) == ("chat", "lobby")
    assert p.stream_room(p.user_stream("alice")) is None
    assert p.stream_room(p.BROADCAST_STREAM) is None


@pytest.mark.parametrize("stream, valid", [
    ("b", True), ("u\x1falice", True), ("r\x1fchat\x1flobby", True),
    ("", False), ("x", False), ("u\x1f", False), ("r\x1fchat", False), ("r\x1f\x1flobby", False),
    ("u\x1fa\x1fb", False), (42, False), (None, False), ("u\x1f" + "a" * 2000, False),
])
def test_valid_stream_refuses_anything_malformed(stream, valid):
    assert p.valid_stream(stream) is valid


def test_positions_are_fixed_width_and_parse_back():
    text = p.format_position(42, "abcd1234")
    assert len(text) == p.POSITION_LENGTH == len(p.PLACEHOLDER)
    assert p.parse_position(text) == (42, "abcd1234")
    assert p.parse_position(text.encode()) == (42, "abcd1234")
    for bad in (None, 42, "", p.PLACEHOLDER, "x" * p.POSITION_LENGTH, text[:-1], b"\xff" * p.POSITION_LENGTH):
        assert p.parse_position(bad) is None


def test_valid_epoch():
    assert p.valid_epoch("abcd1234")
    for bad in ("abcd123", "abcd12345", "abcd-234", 12345678, None, "ábcd1234"):
        assert not p.valid_epoch(bad)


def test_with_position_adds_one_field_a_json_parser_reads():
    frame = p.with_position('{"event":"chat","payload":{"a":1}}', "r\x1fchat\x1flobby", 7, "abcd1234")
    message = json.loads(frame)
    assert message == {"event": "chat", "payload": {"a": 1}, "_pos": ["r\x1fchat\x1flobby", 7, "abcd1234"]}
    assert p.client_position(message) == ("r\x1fchat\x1flobby", 7, "abcd1234")
    assert json.loads(p.with_position("{}", "b", 1, "abcd1234")) == {"_pos": ["b", 1, "abcd1234"]}
    with pytest.raises(ValueError):
        p.with_position("not json", "b", 1, "abcd1234")


@pytest.mark.parametrize("message", [None, [], {}, {"_pos": "x"}, {"_pos": ["b", "1", "e"]}, {"_pos": ["b", 1]}])
def test_client_position_ignores_malformed_fields(message):
    assert p.client_position(message) is None
