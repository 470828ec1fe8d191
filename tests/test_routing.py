"""crossws_sync.cluster.routing, through the facade: several adapters (nodes) sharing real redis-server processes."""
from __future__ import annotations

import gevent
import pytest

from crossws_sync import WebSocketCrossServerAdapter
from rawclient import RawClient
from support import connect_user as _connect, wait_for



def test_broadcast_direct_and_room_messages_cross_nodes(cluster):
    a, b = cluster(2)
    alice, bob = _connect(a, "alice"), _connect(b, "bob")
    wait_for(lambda: a.find_user_node("bob") == "node1" and b.find_user_node("alice") == "node0")
    a.broadcast("news", {"n": 1})
    assert alice.recv_json() == {"event": "news", "payload": {"n": 1}}
    assert bob.recv_json() == {"event": "news", "payload": {"n": 1}}
    a.to_socket_id("bob", "dm", "hi bob")
    assert bob.recv_json() == {"event": "dm", "payload": "hi bob"}
    assert a._router.stats["node_unicasts"] == 1  # routed to bob's node, not the shared channel
    b.join_room("chat", "r1", "bob")
    a.join_room("chat", "r1", "alice")
    a.broadcast_to_room("chat", "r1", "room", "hello room", exclude_socket_ids=["alice"])
    assert bob.recv_json() == {"event": "room", "payload": "hello room"}
    a.to_socket_ids(["alice", "bob"], "multi", 2)
    assert alice.recv_json() == {"event": "multi", "payload": 2}
    assert bob.recv_json() == {"event": "multi", "payload": 2}


def test_room_message_sent_right_after_join_returns_is_never_lost(cluster):
    a, b = cluster(2)
    bob = _connect(b, "bob")
    for i in range(20):
        namespace = "ns%d" % i
        b.join_room(namespace, "r", "bob")  # returns once subscribed on Redis
        a.broadcast_to_room(namespace, "r", "evt", i)
        assert bob.recv_json(timeout=3) == {"event": "evt", "payload": i}
        b.leave_room(namespace, "r", "bob")


def test_join_leave_join_quickly_keeps_the_subscription(cluster):
    a, b = cluster(2)
    bob = _connect(b, "bob")
    for _ in range(10):
        b.join_room("flap", "r", "bob")
        b.leave_room("flap", "r", "bob")
    b.join_room("flap", "r", "bob")
    a.broadcast_to_room("flap", "r", "evt", "still subscribed")
    assert bob.recv_json(timeout=3) == {"event": "evt", "payload": "still subscribed"}


def test_cluster_registry_stats_and_graceful_leave(cluster):
    a, b, c = cluster(3)
    clients = [_connect(a, "u1"), _connect(b, "u2"), _connect(b, "u3")]
    b.join_room("game", "g1", "u2")
    b.join_room("game", "g2", "u3")
    a.join_room("game", "g1", "u1")
    wait_for(lambda: c.get_cluster_stats()["online_users"] == 3)
    stats = c.get_cluster_stats()
    assert stats["nodes"] == {"node0": 1, "node1": 2, "node2": 0}
    wait_for(lambda: c.get_cluster_room_socket_ids("game", "g1") == {"u1", "u2"})
    assert c.get_cluster_room_count("game") == 2
    assert c.is_user_online("u3") and c.find_user_node("u3") == "node1" and not c.is_user_online("nobody")
    b.close(timeout=1)
    wait_for(lambda: sorted(n["server_name"] for n in c.get_cluster_nodes()) == ["node0", "node2"], timeout=2)
    assert not c.is_user_online("u2")
    assert len(clients) == 3


def test_expected_responses_none_means_every_live_node(cluster):
    a, b, c = cluster(3)
    for node in (a, b, c):
        node.on_cross_server_event("who", lambda data, callback, node=node: callback(node.get_server_name()))
    result = a.emit_cross_server_and_wait("who", {}, expected_responses=None, timeout=3)
    assert result["success"] and sorted(result["responses"]) == ["node0", "node1", "node2"]


def test_emitter_only_process_pushes_to_users_on_any_node(cluster, redis_factory):
    redis = redis_factory()
    (node,) = cluster(1, redis_nodes=[redis])
    user = _connect(node, "u1")
    node.join_room("lobby", "main", "u1")
    emitter = WebSocketCrossServerAdapter(server_name="cron", redis_config=[redis.config], node_heartbeat_interval=0.2)
    emitter.start()
    try:
        wait_for(lambda: emitter.find_user_node("u1") == "node0")
        emitter.to_socket_id("u1", "job", "done")
        assert user.recv_json() == {"event": "job", "payload": "done"}
        emitter.broadcast_to_room("lobby", "main", "room", 1)
        assert user.recv_json() == {"event": "room", "payload": 1}
        emitter.broadcast("all", 2)
        assert user.recv_json() == {"event": "all", "payload": 2}
        node.on_cross_server_event("ask", lambda data, callback: callback("answer"))
        assert emitter.emit_cross_server_and_wait("ask", 1, target_server="node0", timeout=3)["success"]
    finally:
        emitter.close()


def test_duplicate_login_across_nodes_closes_the_older_connection(cluster):
    a, b = cluster(2, duplicate_login="close_old")
    old = _connect(a, "dup")
    wait_for(lambda: b.find_user_node("dup") == "node0")
    new = _connect(b, "dup")
    assert old.recv_close(timeout=3) == (4012, "logged in elsewhere")
    b.to_socket_id("dup", "hi", 1)
    assert new.recv_json() == {"event": "hi", "payload": 1}


def test_room_destroy_removes_the_room_on_every_node(cluster):
    a, b = cluster(2)
    bob = _connect(b, "bob")
    b.join_room("tmp", "r", "bob")
    a.broadcast_to_room("tmp", "r", "last", 1, room_destroy=True)
    assert bob.recv_json() == {"event": "last", "payload": 1}
    wait_for(lambda: b.get_room_ids("tmp") == [])


def test_unicast_to_a_user_that_moved_is_forwarded_through_the_shared_channel(cluster):
    a, b, c = cluster(3)
    first = _connect(b, "mover")
    wait_for(lambda: a.find_user_node("mover") == "node1")
    first.close()
    wait_for(lambda: b.get_socket_instance("mover") is None)
    second = _connect(c, "mover")
    # a may still believe "mover" is on node1: the message must arrive anyway
    a.to_socket_id("mover", "dm", "found you")
    assert second.recv_json(timeout=3) == {"event": "dm", "payload": "found you"}


def _numsub(redis, channel):
    reply = redis.command("PUBSUB", "NUMSUB", channel)
    return int(reply.strip().split("\r\n")[-1].lstrip(":"))


def test_presets_stay_subscribed_and_emptied_namespaces_are_unsubscribed(cluster, redis_factory):
    redis = redis_factory()
    (node,) = cluster(1, redis_nodes=[redis], preset_room_namespaces=["lobby"])
    _connect(node, "u1")
    assert _numsub(redis, "ws:lobby") == 1
    node.join_room("lobby", "r", "u1")
    node.leave_room("lobby", "r", "u1")
    node.join_room("game", "g", "u1")
    assert _numsub(redis, "ws:game") == 1
    node.remove_user_socket("u1")  # the original never unsubscribed here
    wait_for(lambda: _numsub(redis, "ws:game") == 0)
    assert _numsub(redis, "ws:lobby") == 1  # presets are never unsubscribed


def test_reserved_namespaces_are_refused(cluster):
    (node,) = cluster(1)
    from crossws_sync import ConfigError

    for namespace in ("private_socket", "broadcast", "_crossws.node:x"):
        with pytest.raises(ConfigError):
            node.join_room(namespace, "r", "u1")


def test_add_redis_instance_turns_on_cross_server_mode(redis_factory):
    redis = redis_factory()
    adapter = WebSocketCrossServerAdapter(server_name="late", node_heartbeat_interval=0.2)
    other = WebSocketCrossServerAdapter(server_name="peer", redis_config=[redis.config])
    try:
        other.on_cross_server_event("hi", lambda data, reply: reply("peer here"))
        other.start()
        disabled = adapter.emit_cross_server_and_wait("hi", 1, timeout=1)
        assert disabled == {"success": False, "message": "Cross-server functionality is not enabled"}
        calls = []
        adapter.emit_cross_server("hi", 1, calls.append)
        assert calls[0]["error_code"] == "CROSS_SERVER_DISABLED"
        adapter.add_redis_instance(redis.config)
        wait_for(lambda: adapter.get_healthy_redis_instances_count("publisher") == 1)
        result = adapter.emit_cross_server_and_wait("hi", 1, target_server="peer", timeout=3)
        assert result["success"] and result["responses"]["peer"]["payload"] == "peer here"
    finally:
        adapter.close()
        other.close()


def test_a_unicast_is_received_by_one_node_whatever_the_cluster_size(cluster):
    nodes = cluster(5)
    target = _connect(nodes[1], "target")
    wait_for(lambda: nodes[0].find_user_node("target") == "node1")
    before = [n._router.stats["routing_messages_in"] for n in nodes]
    for i in range(20):
        nodes[0].to_socket_id("target", "dm", i)
    assert [target.recv_json()["payload"] for _ in range(20)] == list(range(20))
    gevent.sleep(0.2)
    received = [n._router.stats["routing_messages_in"] - b for n, b in zip(nodes, before)]
    assert received == [0, 20, 0, 0, 0]  # the original: every one of the 5 nodes parses all 20


def test_outage_buffer_keeps_the_newest_messages_within_its_bound(cluster, redis_factory):
    redis = redis_factory()
    a, b = cluster(2, redis_nodes=[redis], outage_buffer_size=5)
    bob = _connect(b, "bob")
    b.join_room("chat", "r", "bob")
    wait_for(lambda: a.get_cluster_room_socket_ids("chat", "r") == {"bob"})
    redis.kill()
    wait_for(lambda: not a.bus.healthy and not b.bus.healthy, timeout=5)
    for n in range(20):
        a.broadcast_to_room("chat", "r", "m", n)  # never raises: held while Redis is down
    assert a.routing_stats["outage_pending"] == 5 and a.routing_stats["outage_dropped"] == 15
    redis.start()
    assert [bob.recv_json(timeout=10)["payload"] for _ in range(5)] == [15, 16, 17, 18, 19]
    wait_for(lambda: a.routing_stats["outage_pending"] == 0)
    assert a.routing_stats["outage_flushed"] == 5


def _nothing_more(client, timeout=0.5):
    try:
        extra = client.recv_json(timeout=timeout)
    except OSError:
        return
    raise AssertionError("delivered twice: %r" % (extra,))


def _three_nodes_without_auto_cleanup(redis_factory, app_cleanup):
    server = redis_factory()
    nodes = []
    for index in range(3):
        node = WebSocketCrossServerAdapter(server_name="n%d" % index, ws_options={"host": "127.0.0.1", "port": 0},
                                           redis_config=[server.config], node_heartbeat_interval=0.2)

        def on_connection(socket_, request, node=node):
            user_id = node.parse_ws_request_params(request)["params"].get("id")
            socket_.user_id = user_id
            node.set_user_socket(user_id, socket_)

        node.on_websocket_event("connection", on_connection)
        if app_cleanup:
            node.on_websocket_event("close", lambda s, req, code, reason, node=node: node.remove_user_socket(s.user_id))
        node.start()
        nodes.append(node)
    wait_for(lambda: all(len(n.get_cluster_nodes()) == 3 for n in nodes), timeout=10)
    return nodes


@pytest.mark.parametrize("app_cleanup", [False, True], ids=["no-cleanup", "app-cleanup"])
def test_a_user_who_moved_to_another_node_gets_each_direct_message_once(redis_factory, app_cleanup):
    a, b, c = nodes = _three_nodes_without_auto_cleanup(redis_factory, app_cleanup)
    try:
        first = _connect(a, "x")
        wait_for(lambda: c.find_user_node("x") == "n0")
        first.abort()  # TCP cut, no close frame
        wait_for(lambda: a.get_socket_instance("x") is None or not a.get_socket_instance("x").open)
        second = _connect(b, "x")
        wait_for(lambda: c._router.membership.directory.user_nodes("x") == {"n1"}, message="the directory names only B")
        for i in range(10):
            c.to_socket_id("x", "dm", i)
        received = [second.recv_json()["payload"] for _ in range(10)]
        assert received == list(range(10))
        _nothing_more(second)
        if not app_cleanup:
            assert a.get_socket_instance("x") is not None  # the app's mapping is left as it was
    finally:
        for node in nodes:
            node.close(timeout=1)


def test_a_forward_never_reaches_a_node_that_was_already_targeted(cluster):
    a, b, c = cluster(3)
    x = _connect(b, "x")
    wait_for(lambda: c.find_user_node("x") == "node1")
    # C's directory still names A too (a stale entry): C targets A and B; A cannot deliver and forwards.
    directory = c._router.membership.directory
    directory.apply_delta("node0", directory.nodes["node0"].seq + 1, [["u+", "x", 1.0]], 0.0)
    directory.nodes["node0"].seq -= 1  # as if it had always been there: no resync
    assert c._router.membership.directory.user_nodes("x") == {"node0", "node1"}
    for i in range(5):
        c.to_socket_id("x", "dm", i)
    assert [x.recv_json()["payload"] for _ in range(5)] == list(range(5))
    _nothing_more(x)
    wait_for(lambda: a._router.stats["forwarded"] == 5)


# Paths the original has and we had not tested ------------------------------------------------------

def test_duplicate_login_reject_new_refuses_the_newcomer_on_any_node(cluster):
    a, b = cluster(2, duplicate_login="reject_new")
    first = _connect(a, "dup")
    wait_for(lambda: b.find_user_node("dup") == "node0")
    newcomer = RawClient(b.port, "/?id=dup")
    assert newcomer.recv_close(timeout=3) == (4012, "duplicate login")
    a.to_socket_id("dup", "still", "here")
    assert first.recv_json() == {"event": "still", "payload": "here"}
    assert b.find_user_node("dup") == "node0"
    local_dup = RawClient(a.port, "/?id=dup")  # on the same node too
    assert local_dup.recv_close(timeout=3) == (4012, "duplicate login")
    b.to_socket_id("dup", "once", 1)
    assert first.recv_json() == {"event": "once", "payload": 1}


def test_local_only_broadcasts_stay_on_their_node(cluster):
    a, b = cluster(2)
    alice, bob = _connect(a, "alice"), _connect(b, "bob")
    a.join_room("chat", "r", "alice")
    b.join_room("chat", "r", "bob")
    wait_for(lambda: b.find_user_node("alice") == "node0")
    assert a.broadcast("local", 1, local_only=True) == 1
    assert a.broadcast_to_room("chat", "r", "local-room", 2, local_only=True) == 1
    a.broadcast("everywhere", 3)
    assert alice.recv_json() == {"event": "local", "payload": 1}
    assert alice.recv_json() == {"event": "local-room", "payload": 2}
    assert alice.recv_json() == {"event": "everywhere", "payload": 3}
    assert bob.recv_json() == {"event": "everywhere", "payload": 3}  # nothing local-only came first


def test_auto_unsubscribe_false_keeps_an_emptied_namespace_subscribed(cluster, redis_factory):
    server = redis_factory()
    (a,) = cluster(1, redis_nodes=[server], auto_unsubscribe=False)
    b = WebSocketCrossServerAdapter(server_name="control", ws_options={"no_server": True}, redis_config=[server.config])
    b.start()
    alice = _connect(a, "alice")
    a.join_room("lobby", "r", "alice")
    a.leave_room("lobby", "r", "alice")
    b.join_room("other", "r", "nobody")
    b.leave_room("other", "r", "nobody")
    wait_for(lambda: _numsub(server, "ws:other") == 0)
    assert _numsub(server, "ws:lobby") == 1
    a.join_room("lobby", "r", "alice")
    b.broadcast_to_room("lobby", "r", "hello", 1)
    assert alice.recv_json() == {"event": "hello", "payload": 1}
    b.close(timeout=1)


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_a_binary_payload_reaches_room_members_and_everyone_on_another_node_byte_for_byte(cluster, codec):
    a, b = cluster(2, redis_codec=codec)
    bob, carol = _connect(b, "bob"), _connect(b, "carol")
    b.join_room("files", "r1", "bob")
    wait_for(lambda: a.find_user_node("bob") == "node1")
    payload = bytes(range(256)) + b"\x00\xff" * 100
    assert a.broadcast_raw_to_room("files", "r1", payload) == 0  # nobody on node0
    assert bob.recv_frame() == (0x2, payload)
    a.broadcast_raw(b"\x01\x02 to all")
    assert bob.recv_frame() == (0x2, b"\x01\x02 to all")
    assert carol.recv_frame() == (0x2, b"\x01\x02 to all")
    a.broadcast_raw_to_room("files", "r1", "raw text stays text")
    assert bob.recv_frame() == (0x1, b"raw text stays text")
    with pytest.raises(TypeError):
        a.broadcast_raw(42)
