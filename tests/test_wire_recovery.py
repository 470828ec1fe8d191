"""The pure part of connection state recovery (crossws_sync/wire/recovery.py): per-connection
positions, sessions, the client's request and the recovery decision."""
from __future__ import annotations

import pytest

from crossws_sync.wire import recovery as r
from crossws_sync.wire.positions import format_position

E1, E2 = "epoch001", "epoch002"


def test_tracker_sends_in_order_drops_duplicates_and_reports_gaps():
    t = r.StreamTracker()
    assert t.check("b", 5, E1) == (r.SEND, 0)  # untracked: counted from the message itself
    t.advance("b", 5, E1)
    assert t.check("b", 5, E1) == (r.DUPLICATE, 0)
    assert t.check("b", 4, E1) == (r.DUPLICATE, 0)
    assert t.check("b", 6, E1) == (r.SEND, 0)
    assert t.check("b", 9, E1) == (r.GAP, 5)


def test_a_new_epoch_counts_from_one():
    t = r.StreamTracker()
    t.advance("b", 50, E1)
    assert t.check("b", 1, E2) == (r.SEND, 0)
    assert t.check("b", 3, E2) == (r.GAP, 0)


def test_baseline_turns_a_jump_after_the_join_into_a_gap_but_sends_older_messages():
    t = r.StreamTracker(baseline={"b": (10, E1)})
    assert t.check("b", 9, E1) == (r.SEND, 0)  # sent before the join, still on its way
    assert t.check("b", 11, E1) == (r.SEND, 0)
    assert t.check("b", 13, E1) == (r.GAP, 10)
    t.forget("b")
    assert t.check("b", 13, E1) == (r.SEND, 0)


def test_sessions_round_trip_and_refuse_malformed_ones():
    fields = r.session_fields("alice", {"b": (3, E1), "u\x1falice": (0, E2)})
    assert r.parse_session(fields) == ("alice", {"b": (3, E1), "u\x1falice": (0, E2)})
    assert r.parse_session({}) is None
    assert r.parse_session({"u": "alice", "b": "garbage"}) is None
    assert r.parse_session({"u": "alice", "nonsense": format_position(1, E1)}) is None


@pytest.mark.parametrize("payload", [
    None, [], "sid", {}, {"sid": 5}, {"sid": "short"}, {"sid": "x" * 65}, {"sid": "ñ" * 10},
    {"sid": "s" * 22, "pos": []}, {"sid": "s" * 22, "pos": {str(i): [1, E1] for i in range(5)}},
])
def test_parse_request_refuses_hostile_requests(payload):
    assert r.parse_request(payload, max_streams=4) is None


def test_parse_request_keeps_only_well_formed_positions():
    session_id, positions = r.parse_request({"sid": "s" * 22, "pos": {
        "b": [3, E1], "u\x1fa": [-1, E1], "r\x1fa\x1fb": [2, "bad"], "x": [1, E1], "u\x1fb": [True, E1],
        "u\x1fc": [10 ** 16, E1]}}, max_streams=10)
    assert session_id == "s" * 22
    assert positions == {"b": (3, E1)}


def test_plan_takes_the_client_position_but_never_before_the_join():
    session = r.session_fields("alice", {"b": (5, E1), "r\x1fc\x1fl": (7, E1), "u\x1falice": (2, E1)})
    plan, reason = r.plan_recovery(session, {"b": (9, E1), "r\x1fc\x1fl": (0, E1), "u\x1fbob": (0, E1)})
    assert reason == ""
    assert plan.user_id == "alice"
    # its own position where later, the join's where the client claims less, no foreign streams
    assert plan.starts == {"b": (9, E1), "r\x1fc\x1fl": (7, E1), "u\x1falice": (2, E1)}


def test_plan_follows_a_client_into_a_newer_epoch():
    plan, _ = r.plan_recovery(r.session_fields("alice", {"b": (5, E1)}), {"b": (2, E2)})
    assert plan.starts == {"b": (2, E2)}


def test_plan_without_a_session_says_why():
    assert r.plan_recovery(None, {}) == (None, "unknown or expired session")
    assert r.plan_recovery({"u": ""}, {})[0] is None


def test_check_stream_and_entries():
    assert r.check_stream((5, E1), (9, E1)) == ""
    assert "epoch" in r.check_stream((5, E1), (9, E2))
    assert "ahead" in r.check_stream((10, E1), (9, E1))
    assert r.check_entries(5, [6, 7, 8]) == ""
    assert r.check_entries(5, []) == ""
    assert "trimmed" in r.check_entries(5, [7, 8])
    assert "trimmed" in r.check_entries(5, [6, 8])
