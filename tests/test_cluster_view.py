"""crossws_sync.core.cluster_view: the dashboard's snapshot shaping, without sockets.

Rates from counter samples (a counter that goes back gives 0), the ring's bound, room ranking
across nodes (a room on two nodes is one room, members counted once), the bounds of every list,
node health, and the clipping of long strings.
"""
from __future__ import annotations

import json

import pytest

from crossws_sync.core.cluster_view import (MAX_NODES, MAX_TEXT, RATE_KEYS, RateHistory, build_snapshot, clip,
                                            node_health, node_rows, rank_rooms, slow_consumer_rows)


def test_rates_are_per_second_between_consecutive_samples():
    history = RateHistory(samples=10)
    history.add(100.0, {"in": 0, "out": 0, "bus_in": 5, "bus_out": 0})
    history.add(102.0, {"in": 20, "out": 200, "bus_in": 5, "bus_out": 4})
    history.add(103.0, {"in": 30, "out": 200})  # missing keys count 0: bus_in went back -> 0, not negative
    assert history.rates() == [
        {"t": 102.0, "in": 10.0, "out": 100.0, "bus_in": 0.0, "bus_out": 2.0},
        {"t": 103.0, "in": 10.0, "out": 0.0, "bus_in": 0.0, "bus_out": 0.0},
    ]


def test_the_ring_keeps_the_last_samples_only():
    history = RateHistory(samples=3)
    for second in range(100):
        history.add(float(second), {"in": second * 7})
    rates = history.rates()
    assert [row["t"] for row in rates] == [97.0, 98.0, 99.0]
    assert all(row["in"] == 7.0 for row in rates)
    assert len(history) == 4


def test_samples_too_close_together_are_skipped_and_a_ring_needs_room():
    history = RateHistory(samples=5)
    history.add(1.0, {"in": 0})
    history.add(1.0, {"in": 10})
    assert history.rates() == []
    with pytest.raises(ValueError):
        RateHistory(samples=0)
    assert set(RATE_KEYS) == {"in", "out", "bus_in", "bus_out"}


def test_rooms_are_ranked_across_nodes_and_members_counted_once():
    node_a = {"chat": {"lobby": {"a1", "a2", "a3"}, "small": {"a1"}}, "game": {"t1": {"a4"}}}
    node_b = {"chat": {"lobby": {"b1", "b2", "a1"}, "empty": set()}, "game": {"t2": {"b3", "b4"}}}
    ranked = rank_rooms([node_a, node_b], limit=50)
    assert ranked["top"] == [
        {"namespace": "chat", "room": "lobby", "size": 5},  # a1 is on both nodes: counted once
        {"namespace": "game", "room": "t2", "size": 2},
        {"namespace": "chat", "room": "small", "size": 1},
        {"namespace": "game", "room": "t1", "size": 1},
    ]
    assert ranked["namespaces"] == [{"namespace": "chat", "rooms": 2, "members": 6},
                                    {"namespace": "game", "rooms": 2, "members": 3}]
    assert (ranked["total_rooms"], ranked["total_members"], ranked["total_namespaces"]) == (4, 9, 2)
    assert ranked["truncated"] is False
    assert node_a["chat"]["lobby"] == {"a1", "a2", "a3"}  # the inputs are never changed


def test_many_rooms_give_a_bounded_list_and_exact_totals():
    rooms = {"ns%d" % n: {"room%d" % r: {"u%d" % i for i in range(r % 7 + 1)} for r in range(200)} for n in range(100)}
    ranked = rank_rooms([rooms], limit=10)
    assert len(ranked["top"]) == 10 and len(ranked["namespaces"]) == 10
    assert all(room["size"] == 7 for room in ranked["top"])
    assert ranked["total_rooms"] == 20000 and ranked["total_namespaces"] == 100
    assert ranked["total_members"] == 100 * sum(r % 7 + 1 for r in range(200))
    assert ranked["truncated"] is True
    assert len(json.dumps(ranked)) < 3000


def test_node_health_and_rows():
    ready, unready = (True, "ready"), (False, "redis unreachable")
    assert node_health({"self": True}, 2.0, ready) == "ok"
    assert node_health({"self": True}, 2.0, unready) == "redis unreachable"
    assert node_health({"synced": False, "last_seen_ago": 0.1}, 2.0, ready) == "syncing"
    assert node_health({"synced": True, "last_seen_ago": 3.0}, 2.0, ready) == "ok"
    assert node_health({"synced": True, "last_seen_ago": 3.5}, 2.0, ready) == "late"
    nodes = [{"server_name": "zeta", "users": 2, "rooms": 1, "last_seen_ago": 0.123, "synced": True, "websocket": False},
             {"server_name": "me", "users": 25, "rooms": 3, "self": True, "websocket": True},
             {"server_name": "alpha", "users": 0, "rooms": 0, "last_seen_ago": 9.0, "synced": True}]
    rows = node_rows(nodes, 2.0, ready)
    assert [row["name"] for row in rows] == ["me", "alpha", "zeta"]
    assert rows[0] == {"name": "me", "self": True, "users": 25, "rooms": 3, "last_seen_ago": 0.0, "websocket": True,
                       "health": "ok"}
    assert rows[1]["health"] == "late" and rows[2]["websocket"] is False and rows[2]["last_seen_ago"] == 0.12
    many = [{"server_name": "n%04d" % i, "synced": True} for i in range(MAX_NODES + 50)]
    assert len(node_rows(many, 2.0, ready)) == MAX_NODES


def test_slow_consumer_rows_are_newest_first_and_clipped():
    entries = [{"at": 1.0, "socket_id": "old", "code": 1008, "connected_seconds": 2.5, "messages_sent": 3,
                "bytes_sent": 10},
               {"at": 2.0, "socket_id": "x" * 1000, "code": 1008}]
    rows = slow_consumer_rows(entries)
    assert [row["at"] for row in rows] == [2.0, 1.0]
    assert len(rows[0]["socket_id"]) == MAX_TEXT and rows[0]["socket_id"].endswith("\u2026")
    assert rows[1] == {"at": 1.0, "socket_id": "old", "code": 1008, "connected_seconds": 2.5, "messages_sent": 3,
                       "bytes_sent": 10}


def test_clip_and_the_whole_snapshot():
    assert clip(None) is None and clip(42) == "42" and clip("abc", 2) == "a\u2026"
    hostile = "<img src=x onerror=alert(1)>"
    snapshot = build_snapshot(node=hostile, now=12.3456, interval=1.0, nodes=[], online_users=3, redis=[],
                              rates=[], totals={"connections": 1}, rooms=rank_rooms([], 5), slow_consumers=[],
                              ready=(True, "ready"))
    assert snapshot["node"] == hostile  # kept as text: the page renders it with textContent
    assert snapshot["version"] == 1 and snapshot["generated_at"] == 12.346
    assert snapshot["cluster"] == {"nodes": 0, "online_users": 3}
    assert set(snapshot) == {"version", "node", "generated_at", "interval", "ready", "cluster", "nodes", "redis",
                             "rates", "totals", "rooms", "slow_consumers"}
