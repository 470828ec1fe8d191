"""Hostile clients against a two-node chat app written the usual way: its handlers pass the
namespace and room a client names straight to join_room / leave_room / broadcast_to_room.

Real redis-server, real sockets; what is asserted is what users receive and what Redis has."""
from __future__ import annotations

import json
import socket
import time

import gevent
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossws_sync import InvalidNameError, LimitExceededError, WebSocketCrossServerAdapter
from bus_fixtures import make_bus  # noqa: F401 - fixture
from faultkit import record
from rawclient import HandshakeRejected, RawClient
from support import connect_user, wait_for

SYSTEM_NAMES = ["broadcast", "private_socket", "ws:broadcast", "ws:private_socket", "ws:_crossws.cluster",
                "ws:_crossws.node:node0", "ws:_crossws.node:node1", "_crossws.node:node0", "csbp:server_bridge",
                "csbp:node0", "ws:chat"]


def _channels(server) -> set:
    client = redis.Redis(port=server.port)
    try:
        return {c.decode() for c in client.pubsub_channels()}
    finally:
        client.close()


def _system_channels(*nodes) -> set:
    wanted = set()
    for node in nodes:
        wanted |= {"ws:broadcast", "ws:private_socket", "ws:_crossws.cluster", "ws:_crossws.node:" + node.get_server_name(),
                   node._bus.bridge_channel, node._bus.node_channel}
    return wanted


def _nothing_more(client, timeout=0.3):
    try:
        frame = client.recv_json(timeout=timeout)
    except Exception:
        return True
    raise AssertionError("unexpected delivery: %r" % (frame,))


# 1. Injection ----------------------------------------------------------------------------------

@pytest.mark.parametrize("namespace", ["broadcast", "ws:broadcast", "private_socket", "ws:private_socket",
                                       "csbp:server_bridge", "_crossws.cluster", "ws:_crossws.node:node1"])
def test_a_room_message_to_a_system_name_is_refused_and_reaches_nobody(cluster, namespace):
    a, b = cluster(2)
    attacker, bystander = connect_user(a, "attacker"), connect_user(b, "bystander")
    wait_for(lambda: a.find_user_node("bystander") == "node1")
    with pytest.raises(InvalidNameError):
        a.broadcast_to_room(namespace, "r", "pwn", {"x": 1})
    a.to_socket_id("bystander", "dm", "only this")
    assert bystander.recv_json() == {"event": "dm", "payload": "only this"}
    _nothing_more(bystander)
    _nothing_more(attacker, 0.05)
    assert b._router.stats["bad_messages"] == 0  # no malformed message made it to the peer


# 2. Deafening ----------------------------------------------------------------------------------

@pytest.mark.parametrize("namespace", ["ws:_crossws.node:node0", "ws:broadcast", "ws:private_socket",
                                       "ws:_crossws.cluster", "_crossws.node:node0"])
def test_joining_and_leaving_a_system_name_cannot_deafen_a_node(cluster, redis_factory, namespace):
    server = redis_factory()
    a, b = cluster(2, redis_nodes=[server])
    alice = connect_user(a, "alice")
    wait_for(lambda: b.find_user_node("alice") == "node0")
    for call in (a.join_room, a.leave_room):
        with pytest.raises(InvalidNameError):
            call(namespace, "r", "alice")
    assert _system_channels(a, b) <= _channels(server)
    b.to_socket_id("alice", "dm", 1)
    assert alice.recv_json() == {"event": "dm", "payload": 1}
    b.broadcast("news", 2)
    assert alice.recv_json() == {"event": "news", "payload": 2}
    assert len(a.get_cluster_nodes()) == 2


def test_a_prefixed_alias_cannot_unsubscribe_the_real_namespace(cluster, redis_factory):
    server = redis_factory()
    a, b = cluster(2, redis_nodes=[server])
    alice, eve = connect_user(a, "alice"), connect_user(a, "eve")
    a.join_room("chat", "r", "alice")
    with pytest.raises(InvalidNameError):
        a.join_room("ws:chat", "x", "eve")
    with pytest.raises(InvalidNameError):
        a.leave_room("ws:chat", "x", "eve")
    assert "ws:chat" in _channels(server)
    b.broadcast_to_room("chat", "r", "msg", "still here")
    assert alice.recv_json() == {"event": "msg", "payload": "still here"}
    _nothing_more(eve, 0.05)


# 3. Poisoned subscriptions ---------------------------------------------------------------------

def test_surrogate_names_are_refused_everywhere(cluster):
    (a,) = cluster(1)
    alice = connect_user(a, "alice")  # noqa: F841 - kept open
    for call in (lambda: a.join_room("\ud800", "r", "alice"), lambda: a.join_room("chat", "\ud800", "alice"),
                 lambda: a.leave_room("chat", "\udfff", "alice"), lambda: a.broadcast_to_room("\ud800", "r", "e"),
                 lambda: a.remove_room("chat", "\ud800"), lambda: a.to_socket_id("\ud800", "e"),
                 lambda: a.get_room_ids("\ud800"), lambda: a.join_room("chat", "r", "x" * 257)):
        with pytest.raises(InvalidNameError):
            call()
    assert a.is_joined_room("alice", "\ud800") is False
    assert a.rooms.namespaces() == []


def test_a_reconnecting_subscriber_skips_a_bad_channel_resubscribes_the_rest_and_says_it_is_unhealthy(
        cluster, redis_factory):
    server = redis_factory()
    health = []
    (a,) = cluster(1, redis_nodes=[server], on_redis_health_change=lambda ok, info: health.append((ok, info.type)))
    for index in range(300):  # more than one chunk of SUBSCRIBE
        a.join_room("ns%d" % index, "r", "u%d" % index)
    subscriber = a._bus._nodes.nodes[0]._subscriber
    subscriber.want(["poisoned\ud800"])  # what an unchecked name did before the name policy
    redis.Redis(port=server.port).client_kill_filter(_type="pubsub")
    wanted = _system_channels(a) | {"ws:ns%d" % i for i in range(300)}
    wait_for(lambda: wanted <= _channels(server), timeout=10, message="every good channel re-subscribed")
    wait_for(lambda: "poisoned\ud800" in subscriber.missing_channels)
    assert a.get_healthy_redis_instances_count("subscriber") == 0
    assert (False, "subscriber") in health
    subscriber.unsubscribe(["poisoned\ud800"])
    wait_for(lambda: a.get_healthy_redis_instances_count("subscriber") == 1, message="healthy once it is gone")


def test_a_chunk_refused_by_redis_is_retried_channel_by_channel(redis_server, make_bus):
    redis_server.command("ACL", "SETUSER", "limited", "on", ">pw", "resetchannels", "&csbp:*", "&ok*", "~*",
                         "+@all")
    bus = make_bus("A", [dict(redis_server.config, username="limited", password="pw")])
    subscriber = bus._nodes.nodes[0]._subscriber
    subscriber.want(["ok%d" % i for i in range(10)] + ["forbidden"])
    redis.Redis(port=redis_server.port).client_kill_filter(_type="pubsub")
    wait_for(lambda: all(subscriber.is_subscribed("ok%d" % i) for i in range(10)), timeout=10)
    wait_for(lambda: "forbidden" in subscriber.missing_channels)
    assert "permission" in subscriber.missing_channels["forbidden"].lower()
    assert bus.get_healthy_redis_instances_count("subscriber") == 0


# 4. Limits per connection ----------------------------------------------------------------------

def test_room_and_namespace_limits_per_socket(cluster, redis_factory):
    server = redis_factory()
    (a,) = cluster(1, redis_nodes=[server], max_rooms_per_socket=5, max_namespaces_per_socket=2)
    eve = connect_user(a, "eve")  # noqa: F841 - kept open: a closed socket leaves its rooms
    for room in range(3):
        a.join_room("n1", "r%d" % room, "eve")
    a.join_room("n2", "r0", "eve")
    with pytest.raises(LimitExceededError) as info:
        a.join_room("n3", "r0", "eve")
    assert info.value.limit == "max_namespaces_per_socket"
    a.join_room("n2", "r1", "eve")
    a.join_room("n2", "r1", "eve")  # already in: not counted twice
    with pytest.raises(LimitExceededError) as info:
        a.join_room("n1", "r9", "eve")
    assert info.value.limit == "max_rooms_per_socket"
    assert "ws:n3" not in _channels(server) and a.rooms.socket_room_count("eve") == 5
    a.join_room("n1", "r0", "other")  # another socket has its own budget


def test_cleanup_of_a_socket_in_many_namespaces_is_one_unsubscribe_and_other_clients_keep_working(
        cluster, redis_factory):
    server = redis_factory()
    (a,) = cluster(1, redis_nodes=[server], max_rooms_per_socket=None, max_namespaces_per_socket=None)
    eve, alice = connect_user(a, "eve"), connect_user(a, "alice")
    count = 3000
    for index in range(count):
        a.join_room("n%d" % index, "r", "eve")
    wait_for(lambda: len(_channels(server)) >= count, timeout=20)
    longest = []

    def ping_loop():
        while True:
            started = gevent.get_hub().loop.now()
            gevent.sleep(0.005)
            longest.append(gevent.get_hub().loop.now() - started)

    pinger = gevent.spawn(ping_loop)
    gevent.sleep(0.01)  # the pinger is in its loop: a stall in the cleanup below is measured
    a.remove_user_socket("eve")
    wait_for(lambda: len(_channels(server)) < 10, timeout=20, message="every namespace unsubscribed")
    gevent.sleep(0.01)  # and it measured at least once after the cleanup began
    pinger.kill()
    a.to_socket_id("alice", "dm", "ok")
    assert alice.recv_json() == {"event": "dm", "payload": "ok"}
    record("cleanup_of_many_namespaces", namespaces=count, longest_stall_ms=round(max(longest) * 1000, 1))
    assert max(longest) < 1.0, "the node stalled %.2f s cleaning up" % max(longest)
    eve.close()


# Property: any sequence of hostile names leaves every system channel subscribed and delivers
# nothing to a user who was not addressed. --------------------------------------------------------

NAMES = st.one_of(st.sampled_from(SYSTEM_NAMES + ["chat", "r", "\ud800", "a\x00b", "x" * 300]),
                  st.text(max_size=12))
OPS = st.lists(st.tuples(st.sampled_from(["join", "leave", "broadcast", "remove"]), NAMES, NAMES),
               min_size=1, max_size=8)


@pytest.fixture
def chat(cluster, redis_factory):
    server = redis_factory()
    a, b = cluster(2, redis_nodes=[server])
    attacker = connect_user(a, "attacker")  # noqa: F841 - kept open
    member, bystander = connect_user(b, "member"), connect_user(b, "bystander")
    b.join_room("chat", "r", "member")
    wait_for(lambda: a.find_user_node("bystander") == "node1")
    return server, a, b, member, bystander, attacker


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_hostile_name_sequences_keep_system_channels_and_reach_only_addressed_users(chat, ops):
    server, a, b, member, bystander, _ = chat
    for op, namespace, room in ops:
        try:
            if op == "join":
                a.join_room(namespace, room, "attacker")
            elif op == "leave":
                a.leave_room(namespace, room, "attacker")
            elif op == "remove":
                a.remove_room(namespace, room)
            else:
                a.broadcast_to_room(namespace, room, "hostile", [namespace, room])
        except (TypeError, InvalidNameError, LimitExceededError):
            pass  # what the app sends back to the client as an error
    assert _system_channels(a, b) <= _channels(server)
    a.broadcast_to_room("chat", "r", "end", None)
    a.to_socket_id("bystander", "end", None)
    while True:
        frame = member.recv_json()
        if frame["event"] == "end":
            break
        assert frame == {"event": "hostile", "payload": ["chat", "r"]}
    assert bystander.recv_json() == {"event": "end", "payload": None}
    a.remove_user_socket("attacker")  # the next example starts with a clean attacker


def test_a_big_cluster_snapshot_goes_in_parts_under_the_cap_and_a_fresh_peer_syncs(cluster, redis_factory, monkeypatch):
    import crossws_sync.core.directory as directory

    monkeypatch.setattr(directory.snapshot_parts, "__defaults__", (16 * 1024,))
    server = redis_factory()
    (a,) = cluster(1, redis_nodes=[server], max_rooms_per_socket=None)
    sizes = []
    send = a._router.membership._send_to_node

    def spy(name, message):
        if message.get("t") == "snap":
            sizes.append(len(json.dumps(message)))
        return send(name, message)

    a._router.membership._send_to_node = spy
    members = [connect_user(a, "user%d" % i) for i in range(5)]
    for index in range(2000):
        a.join_room("chat", "room-%d-" % index + "y" * 100, "user%d" % (index % 5))
    b = WebSocketCrossServerAdapter(server_name="late", redis_config=[server.config], node_heartbeat_interval=0.2)
    try:
        b.start()
        wait_for(lambda: len(b._router.membership.room_ids("chat")) == 2000, timeout=20, message="the peer synced every room")
        assert b._router.membership.find_user_node("user3") == "node0"
    finally:
        b.close(timeout=1)
    record("snapshot_in_parts", rooms=2000, parts=len(sizes), largest_part_bytes=max(sizes), total_bytes=sum(sizes))
    assert len(sizes) >= 10 and max(sizes) < 64 * 1024
    del members


# 5. The liveness sweep yields --------------------------------------------------------------------

class _IdleClient:
    """Stands in for a connection in the sweep: what the sweep reads and calls."""

    def __init__(self, log):
        self.enter_background_time = 0
        self.is_alive = True
        self.log = log

    def ping(self):
        self.log.append("ping")

    def terminate(self):
        self.log.append("terminate")


def test_the_liveness_sweep_yields_so_other_clients_are_served():
    adapter = WebSocketCrossServerAdapter(ws_options={"no_server": True})
    service = adapter.get_wss()
    log = []
    idle = [_IdleClient(log) for _ in range(20000)]
    service.clients.update(idle)
    ticker = gevent.spawn(lambda: [log.append("other") or gevent.sleep(0) for _ in range(1000)])
    try:
        service.sweep_once(now=0.0)
    finally:
        ticker.kill()
        service.clients.difference_update(idle)
    first_other = log.index("other")
    record("sweep_yields", clients=20000, first_yield_after=first_other, yields=log.count("other"))
    assert first_other < 1000, "another greenlet ran only after %d clients were swept" % first_other
    assert log.count("ping") == 20000 and log.count("other") > 20
    service.clients.update(idle[:10])
    try:
        service.sweep_once(now=0.0)  # no pong since the last sweep: dropped
    finally:
        service.clients.difference_update(idle)
    assert log.count("terminate") == 10


# 6. Before the upgrade ---------------------------------------------------------------------------

def _open(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _response_or_eof(sock, timeout=10.0):
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.split(b"\r\n", 1)[0]


@pytest.fixture
def guarded(request):
    options = getattr(request, "param", {})
    adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": 0}, **options)
    adapter.on_websocket_event("echo", lambda socket_, payload, callback: callback and callback(payload))
    adapter.start()
    yield adapter
    adapter.close(timeout=1)


def _round_trip(port):
    client = RawClient(port, "/")
    client.send_json({"event": "echo", "payload": "hi", "callbackId": "c1"})
    reply = client.recv_json()
    client.close()
    return reply


@pytest.mark.parametrize("guarded", [dict(handshake_timeout=0.5)], indirect=True)
def test_silent_and_slow_header_sockets_are_closed_at_the_deadline_while_real_clients_are_served(guarded):
    port = guarded.port
    silent = [_open(port) for _ in range(150)]
    slow = [_open(port) for _ in range(150)]
    for sock in slow:
        sock.sendall(b"GET / HTTP/1.1\r\n")
    drip = gevent.spawn(lambda: [[s.sendall(b"X-A: b\r\n") for s in slow] and gevent.sleep(0.1) for _ in range(30)])
    try:
        assert _round_trip(port)["callbackId"] == "c1"  # served meanwhile
        started = time.monotonic()
        answers = [_response_or_eof(sock) for sock in silent + slow]
        assert time.monotonic() - started < 5.0
    finally:
        drip.kill()
        for sock in silent + slow:
            sock.close()
    record("head_deadline", sockets=len(answers), answered_408=answers.count(b"HTTP/1.1 408 Request Timeout"),
           all_closed_within_s=round(time.monotonic() - started, 2), deadline_s=0.5)
    assert set(answers) <= {b"HTTP/1.1 408 Request Timeout", b""}
    assert answers.count(b"HTTP/1.1 408 Request Timeout") >= 250
    wait_for(lambda: not guarded._life.head_guard.pending)
    assert guarded._life.head_guard.stats["head_timeouts"] >= 250


def test_huge_header_blocks_get_431_without_being_buffered(guarded):
    import psutil

    port = guarded.port
    rss_before = psutil.Process().memory_info().rss
    socks = []
    for _ in range(20):
        sock = _open(port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        socks.append(sock)
    line = b"X-Big: " + b"a" * 60000 + b"\r\n"
    answers = []
    for sock in socks:
        try:
            for _ in range(95):  # 5.7 MB that the old parser buffered per connection
                sock.sendall(line)
        except OSError:
            pass  # the server closed after the cap: what we want
        answers.append(_response_or_eof(sock))
        sock.close()
    growth = psutil.Process().memory_info().rss - rss_before
    record("huge_headers", connections=20, offered_bytes_each=95 * len(line), rss_growth_mib=round(growth / 2 ** 20, 1))
    assert answers == [b"HTTP/1.1 431 Request Header Fields Too Large"] * 20
    assert growth < 40 * 2 ** 20
    assert _round_trip(port)["payload"] == "hi"


@pytest.mark.parametrize("guarded", [dict(max_pending_handshakes=50)], indirect=True)
def test_unfinished_upgrades_have_a_limit_of_their_own_and_the_oldest_make_room(guarded):
    port = guarded.port
    silent = []
    for _ in range(60):
        silent.append(_open(port))
        gevent.sleep(0.005)
    try:
        assert _round_trip(port)["payload"] == "hi"
        evicted = [_response_or_eof(sock, timeout=3) for sock in silent[:10]]
        record("pending_handshakes", limit=50, opened=60, evicted_503=evicted.count(b"HTTP/1.1 503 Service Unavailable"),
               pending=len(guarded._life.head_guard.pending))
        assert evicted == [b"HTTP/1.1 503 Service Unavailable"] * 10
        assert len(guarded._life.head_guard.pending) <= 50
    finally:
        for sock in silent:
            sock.close()


# 7. Cross-site WebSocket hijacking ---------------------------------------------------------------

@pytest.mark.parametrize("guarded, origin, allowed", [
    ({}, None, True),
    ({}, "http://127.0.0.1:{port}", True),
    ({}, "http://evil.example", False),
    ({}, "http://127.0.0.1:1", False),
    ({}, "null", False),
    (dict(allowed_origins=["https://app.example"]), "https://app.example", True),
    (dict(allowed_origins=["https://app.example"]), "http://127.0.0.1:{port}", False),
    (dict(allowed_origins="*"), "http://evil.example", True),
], indirect=["guarded"])
def test_origin_policy_is_same_origin_by_default(guarded, origin, allowed):
    headers = {"Origin": origin.format(port=guarded.port)} if origin else {}
    try:
        client = RawClient(guarded.port, "/", headers=headers)
    except HandshakeRejected as rejected:
        assert not allowed and rejected.status == 403
    else:
        assert allowed
        client.close()
