"""crossws_sync.cluster.asks: server-to-client requests (``to_socket_id`` with a callback,
``to_socket_id_with_promise``, ``to_socket_id_and_wait``) on one node and across nodes, with real
redis-server processes, real sockets, the Python client answering through ``reply`` and a raw
client sending what a hostile or original client would."""
from __future__ import annotations

import time

import gevent
import pytest

from crossws_sync import WebSocketConnector
from crossws_sync.cluster.asks import (ACK_TIMEOUT, INVALID_ARGUMENT, TOO_MANY_PENDING_ACKS, USER_DISCONNECTED,
                                       USER_NOT_FOUND, WEBSOCKET_DISABLED)
from crossws_sync.errors import ConfigError
from rawclient import RawClient
from support import connect_user, wait_for


def python_client(node, user_id, event="confirm", answer=lambda payload: {"yes": payload}):
    """A Python client connected to ``node`` as ``user_id`` whose ``event`` listener replies ``answer(payload)``."""
    client = WebSocketConnector("ws://127.0.0.1:%d/?id=%s" % (node.port, user_id), ping_interval=60)
    client.on(event, lambda payload, reply: reply(answer(payload)))
    assert client.wait_connected(5)
    wait_for(lambda: node.get_socket_instance(user_id) is not None)
    return client


@pytest.fixture
def single(make_adapter):
    """One node without Redis, mapping ``?id=`` to the user id."""
    adapter = make_adapter()

    def on_connection(socket_, request):
        user_id = adapter.parse_ws_request_params(request)["params"].get("id")
        if user_id:
            adapter.set_user_socket(user_id, socket_)

    adapter.on_websocket_event("connection", on_connection)
    adapter.start()
    return adapter


# One node ------------------------------------------------------------------------------------


def test_a_local_user_answers_in_every_form(single):
    client = python_client(single, "alice")
    try:
        assert single.to_socket_id_and_wait("alice", "confirm", 1, timeout=3) == {"success": True, "data": {"yes": 1}}
        assert single.to_socket_id_with_promise("alice", "confirm", [2]).get(timeout=3).data == {"yes": [2]}
        results = []
        assert single.to_socket_id("alice", "confirm", "three", callback=results.append) is True
        wait_for(lambda: results)
        gevent.sleep(0.1)
        assert results == [{"success": True, "data": {"yes": "three"}}]  # exactly once
        assert single.ack_stats["answered"] == 3 and single.ack_stats["pending"] == 0
    finally:
        client.close()


def test_the_request_frame_is_an_event_with_an_ack_id_and_a_raw_answer_settles_it(single):
    raw = RawClient(single.port, "/?id=raw")
    wait_for(lambda: single.get_socket_instance("raw") is not None)
    promise = single.to_socket_id_with_promise("raw", "confirm", {"q": 1}, timeout=3)
    frame = raw.recv_json()
    assert set(frame) == {"event", "payload", "ackId"} and "callbackId" not in frame
    assert frame["event"] == "confirm" and frame["payload"] == {"q": 1}
    raw.send_json({"ackId": frame["ackId"]})  # no payload: data None
    assert promise.get(timeout=3) == {"success": True, "data": None}
    # Without a callback, to_socket_id is unchanged: a plain event frame.
    assert single.to_socket_id("raw", "plain", 1) is True
    assert raw.recv_json() == {"event": "plain", "payload": 1}


def test_no_answer_times_out_and_a_late_answer_is_ignored(single):
    raw = RawClient(single.port, "/?id=slow")
    wait_for(lambda: single.get_socket_instance("slow") is not None)
    started = time.monotonic()
    results = []
    single.to_socket_id("slow", "confirm", 1, callback=results.append, timeout=0.3)
    ack_id = raw.recv_json()["ackId"]
    wait_for(lambda: results, timeout=3)
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 1.5, elapsed
    assert results[0]["success"] is False and results[0]["error_code"] == ACK_TIMEOUT
    raw.send_json({"ackId": ack_id, "payload": "too late"})
    wait_for(lambda: single.ack_stats["unmatched_answers"] == 1)
    gevent.sleep(0.1)
    assert len(results) == 1
    assert single.to_socket_id("slow", "still", "up") is True and raw.recv_json()["event"] == "still"


def test_an_unknown_user_fails_at_once(single):
    started = time.monotonic()
    result = single.to_socket_id_and_wait("nobody", "confirm", 1, timeout=5)
    assert time.monotonic() - started < 0.5
    assert result["success"] is False and result["error_code"] == USER_NOT_FOUND and result["error"]


def test_a_disconnect_before_the_answer_fails_at_once(single):
    raw = RawClient(single.port, "/?id=leaver")
    wait_for(lambda: single.get_socket_instance("leaver") is not None)
    promise = single.to_socket_id_with_promise("leaver", "confirm", 1, timeout=5)
    raw.recv_json()
    started = time.monotonic()
    raw.close()
    result = promise.get(timeout=3)
    assert time.monotonic() - started < 1.0
    assert result["error_code"] == USER_DISCONNECTED and single.ack_stats["pending"] == 0


def test_answers_of_foreign_or_unknown_ids_change_nothing(single):
    victim, thief = RawClient(single.port, "/?id=victim"), RawClient(single.port, "/?id=thief")
    wait_for(lambda: single.get_socket_instance("victim") is not None and single.get_socket_instance("thief") is not None)
    promise = single.to_socket_id_with_promise("victim", "confirm", 1, timeout=3)
    ack_id = victim.recv_json()["ackId"]
    thief.send_json({"ackId": ack_id, "payload": "forged"})  # another connection's id
    for bad in ({"ackId": "never-sent"}, {"ackId": 42}, {"ackId": "x" * 65}, {"ackId": ""}):
        thief.send_json(bad)
    wait_for(lambda: single.ack_stats["unmatched_answers"] == 2)
    wait_for(lambda: single.get_wss().stats["bad_frames"] == 3)
    assert not promise.ready()
    victim.send_json({"ackId": ack_id, "payload": "genuine"})
    assert promise.get(timeout=3) == {"success": True, "data": "genuine"}
    assert single.to_socket_id("thief", "still", "up") is True and thief.recv_json()["event"] == "still"


def test_invalid_arguments_raise_in_the_callback_form_and_resolve_in_the_others(single):
    with pytest.raises(ConfigError):
        single.to_socket_id("u", "e", 1, callback=lambda result: None, timeout=0)
    with pytest.raises(ConfigError):
        single.to_socket_id("u", "e", 1, callback=lambda result: None, timeout=float("inf"))
    with pytest.raises(TypeError):
        single.to_socket_id("u", "e", 1, callback="not callable")
    with pytest.raises(TypeError):
        single.to_socket_id("u", "", 1, callback=lambda result: None)
    for result in (single.to_socket_id_and_wait("u", "e", 1, timeout=-1), single.to_socket_id_and_wait("", "e", 1),
                   single.to_socket_id_and_wait("u", "e", object())):
        assert result["success"] is False and result["error_code"] == INVALID_ARGUMENT


def test_pending_requests_are_bounded_per_connection_and_per_node(make_adapter):
    adapter = make_adapter(max_pending_acks=3, max_pending_acks_per_socket=2)
    adapter.on_websocket_event("connection", lambda socket_, request: adapter.set_user_socket(
        adapter.parse_ws_request_params(request)["params"]["id"], socket_))
    adapter.start()
    hostile, other = RawClient(adapter.port, "/?id=hostile"), RawClient(adapter.port, "/?id=other")
    wait_for(lambda: adapter.get_socket_client_count() == 2)
    first = [adapter.to_socket_id_with_promise("hostile", "confirm", n, timeout=5) for n in range(2)]
    started = time.monotonic()
    refused = adapter.to_socket_id_and_wait("hostile", "confirm", 3, timeout=5)
    assert refused["error_code"] == TOO_MANY_PENDING_ACKS and time.monotonic() - started < 0.5
    assert [hostile.recv_json()["payload"] for _ in range(2)] == [0, 1]
    # The node bound: one more for another user, then refused.
    third = adapter.to_socket_id_with_promise("other", "confirm", "a", timeout=5)
    assert adapter.to_socket_id_and_wait("other", "confirm", "b")["error_code"] == TOO_MANY_PENDING_ACKS
    answer = other.recv_json()
    assert answer["payload"] == "a"
    other.send_json({"ackId": answer["ackId"], "payload": "ok"})
    assert third.get(timeout=3).data == "ok"
    assert adapter.ack_stats["refused"] == 2 and not any(p.ready() for p in first)
    with pytest.raises(TimeoutError):
        hostile.recv_json(timeout=0.2)  # the refused request was never sent


def test_without_websocket_or_redis(make_adapter):
    from crossws_sync import WebSocketCrossServerAdapter

    bare = WebSocketCrossServerAdapter()
    assert bare.to_socket_id_and_wait("u", "e", 1)["error_code"] == WEBSOCKET_DISABLED


# Across nodes ----------------------------------------------------------------------------------


def test_a_user_on_another_node_answers(cluster):
    a, b = cluster(2)
    bob = python_client(b, "bob", answer=lambda payload: {"from": "bob", "got": payload})
    try:
        wait_for(lambda: a.find_user_node("bob") == "node1")
        result = a.to_socket_id_and_wait("bob", "confirm", {"n": 1}, timeout=3)
        assert result == {"success": True, "data": {"from": "bob", "got": {"n": 1}}}
        results = []
        assert a.to_socket_id("bob", "confirm", 2, callback=results.append) is False  # not local
        wait_for(lambda: results)
        assert results[0].data == {"from": "bob", "got": 2}
        assert a.ack_stats["asked_remote"] == 2 and b.ack_stats["sent"] == 2 and a.ack_stats["pending"] == 0
    finally:
        bob.close()


def test_across_nodes_unknown_user_timeout_and_disconnect(cluster):
    a, b = cluster(2)
    started = time.monotonic()
    assert a.to_socket_id_and_wait("ghost", "confirm", 1, timeout=5)["error_code"] == USER_NOT_FOUND
    assert time.monotonic() - started < 0.5
    raw = connect_user(b, "raw")
    wait_for(lambda: a.find_user_node("raw") == "node1")
    started = time.monotonic()
    result = a.to_socket_id_and_wait("raw", "confirm", 1, timeout=0.4)
    assert result["error_code"] == ACK_TIMEOUT and 0.35 < time.monotonic() - started < 2
    late = raw.recv_json()
    wait_for(lambda: b.ack_stats["pending"] == 0)  # b's own copy of the deadline passed too
    raw.send_json({"ackId": late["ackId"], "payload": "late"})
    wait_for(lambda: b.ack_stats["unmatched_answers"] == 1)
    promise = a.to_socket_id_with_promise("raw", "confirm", 2, timeout=5)
    raw.recv_json()
    started = time.monotonic()
    raw.close()
    assert promise.get(timeout=3)["error_code"] == USER_DISCONNECTED
    assert time.monotonic() - started < 1.5
    assert a.ack_stats["pending"] == 0 and b.ack_stats["pending"] == 0


def test_a_user_that_moved_is_reached_through_one_forward(cluster):
    a, b, c = cluster(3)
    carol = python_client(c, "carol")
    try:
        wait_for(lambda: a.find_user_node("carol") == "node2" and b.find_user_node("carol") == "node2")
        a._asks._owner = lambda router, socket_id: "node1"  # a stale directory: carol was on node1
        assert a.to_socket_id_and_wait("carol", "confirm", 5, timeout=3) == {"success": True, "data": {"yes": 5}}
        assert b.ack_stats["forwarded"] == 1
    finally:
        carol.close()


def test_bad_messages_from_redis_are_counted_never_fatal(cluster):
    a, b = cluster(2)
    bob = python_client(b, "bob")
    try:
        channel = b._router.node_channel
        before = b._router.stats["bad_messages"]
        bad = [{"t": "ask", "node": "x"}, {"t": "ask", "node": "x", "id": 5, "user": "bob", "frame": '{"event":"e"}',
                                            "timeout": 1, "asker": "node0"},
               {"t": "ask", "node": "x", "id": "1", "user": "bob", "frame": "not json", "timeout": 1, "asker": "node0"},
               {"t": "ask", "node": "x", "id": "1", "user": "bob", "frame": '{"event":"e"}', "timeout": 1e9, "asker": "node0"},
               {"t": "ans", "node": "x", "id": "1", "ok": "yes"}, {"t": "ans", "node": "x", "id": "1", "ok": False, "code": "BOGUS"}]
        for message in bad:
            a.publish_redis_message(channel, message)
        wait_for(lambda: b._router.stats["bad_messages"] - before == len(bad))
        wait_for(lambda: a.find_user_node("bob") == "node1")
        assert a.to_socket_id_and_wait("bob", "confirm", 1, timeout=3).success
    finally:
        bob.close()
