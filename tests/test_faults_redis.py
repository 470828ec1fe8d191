"""Redis faults injected for real: redis-server SIGKILLed under traffic and restarted, one of two
Redis nodes killed under a stream of RPCs and room broadcasts, a subscriber cut by Redis's
pub/sub output-buffer limit, exceptions injected into the background greenlets.

Every RPC and room message is numbered and its fate recorded, so the figures of
``docs/reliability.md`` (sent / delivered / lost, time to recover) come from these tests.
"""
from __future__ import annotations

import base64
import os
import signal
import time
from typing import Any, Dict, List, Tuple

import gevent
import psutil
import pytest
import redis as redis_py

from crossws_sync import WebSocketCrossServerAdapter
from faultkit import mib, record
from rawclient import RawClient
from support import wait_for

PING = 0.3  # redis_ping_interval / redis_ping_timeout of the nodes under test


class Health:
    """Every ``on_redis_health_change`` call of every node: (time, node, type, healthy, port, event)."""

    def __init__(self) -> None:
        self.events: List[Tuple[float, str, str, bool, int, str]] = []

    def hook(self, name: str):
        def on_change(healthy: bool, info: Any) -> None:
            self.events.append((time.monotonic(), name, info.type, healthy, info.port, info.event))

        return on_change

    def first(self, after: float, healthy: bool, names, port=None, types=("publisher", "subscriber")) -> float:
        """Time when every (node, type) pair had flipped to ``healthy`` after ``after`` (0 if not yet)."""
        seen: Dict[Tuple[str, str], float] = {}
        for stamp, name, kind, is_healthy, node_port, _ in self.events:
            if stamp >= after and is_healthy == healthy and name in names and kind in types \
                    and (port is None or node_port == port):
                seen.setdefault((name, kind), stamp)
        wanted = {(name, kind) for name in names for kind in types}
        return max(seen.values()) if wanted <= set(seen) else 0.0


def start_node(name: str, redis_config: List[Any], health: "Health", **options: Any) -> WebSocketCrossServerAdapter:
    """A started in-process node with fast health timings (heartbeat 0.3 s unless given): it maps
    ``?id=<user>`` connections and answers the cross-server event ``rpc`` with its payload."""
    options.setdefault("node_heartbeat_interval", 0.3)
    adapter = WebSocketCrossServerAdapter(
        server_name=name, ws_options={"host": "127.0.0.1", "port": 0}, redis_config=redis_config,
        redis_ping_interval=PING, redis_ping_timeout=PING, auto_cleanup=True,
        on_redis_health_change=health.hook(name), **options)

    def on_connection(socket_: Any, request: Any) -> None:
        user = adapter.parse_ws_request_params(request)["params"].get("id")
        if user:
            adapter.set_user_socket(user, socket_)

    adapter.on_websocket_event("connection", on_connection)
    adapter.on_cross_server_event("rpc", lambda data, callback: callback and callback(data["payload"]))
    adapter.start()
    return adapter


@pytest.fixture
def nodes():
    """Factory of in-process WebSocket + Redis nodes (fast health timings); closed at teardown."""
    made: List[WebSocketCrossServerAdapter] = []

    def make(names, redis_nodes, health: Health, **options):
        result = []
        for name in names:
            adapter = start_node(name, [r.config for r in redis_nodes], health, **options)
            made.append(adapter)
            result.append(adapter)
        wait_for(lambda: all(len(n.get_cluster_nodes()) == len(names) for n in result), timeout=10,
                 message="every node to see the others")
        return result

    yield make
    for adapter in made:
        adapter.close(timeout=1)


def _user(node: WebSocketCrossServerAdapter, user: str) -> RawClient:
    client = RawClient(node.port, "/?id=" + user)
    wait_for(lambda: node.get_socket_instance(user) is not None)
    return client


class Traffic:
    """A steady stream of numbered RPCs (a -> b) and room broadcasts (a -> a member on b)."""

    def __init__(self, sender: WebSocketCrossServerAdapter, target: str, member: RawClient,
                 interval: float, rpc_timeout: float, room: Tuple[str, str] = ("chat", "r")) -> None:
        self.sender, self.target, self.member = sender, target, member
        self.interval, self.rpc_timeout, self.room = interval, rpc_timeout, room
        self.sent: Dict[int, float] = {}
        self.rpc: Dict[int, Tuple[float, bool, Any]] = {}  # seq -> (settled at, success, error_code)
        self.delivered: Dict[int, float] = {}  # room message seq -> received at
        self.duplicates = 0
        self.longest_send = 0.0  # the longest time one emit + room broadcast blocked the sender
        self.running = True
        self.rss_before = psutil.Process().memory_info().rss  # the test process: both nodes live in it
        self._reader = gevent.spawn(self._read)
        self._writer = gevent.spawn(self._write)

    def _write(self) -> None:
        seq = 0
        while self.running:
            seq += 1
            self.sent[seq] = started = time.monotonic()
            self.sender.emit_cross_server("rpc", seq, self._settle(seq), target_server=self.target,
                                          timeout=self.rpc_timeout)
            self.sender.broadcast_to_room(self.room[0], self.room[1], "m", seq)
            self.longest_send = max(self.longest_send, time.monotonic() - started)
            gevent.sleep(self.interval)

    def _settle(self, seq: int):
        def callback(result: Any) -> None:
            self.rpc[seq] = (time.monotonic(), bool(result.success), result.get("error_code"))

        return callback

    def _read(self) -> None:
        while True:
            message = self.member.recv_json(timeout=60)
            if message.get("event") == "m":
                if message["payload"] in self.delivered:
                    self.duplicates += 1
                self.delivered.setdefault(message["payload"], time.monotonic())

    def count(self) -> int:
        return len(self.sent)

    def stop(self) -> None:
        self.running = False  # never killed half-way through one RPC + room message pair
        self._writer.join(10)
        last = max(self.sent) if self.sent else 0
        wait_for(lambda: all(seq in self.rpc for seq in range(1, last + 1)), timeout=self.rpc_timeout + 5,
                 message="every RPC settled")
        # room messages still in flight: give them the same time as an RPC
        wait_for(lambda: time.monotonic() - self.sent[last] > min(1.0, self.rpc_timeout), timeout=5)
        self._reader.kill()
        self.rss_after = psutil.Process().memory_info().rss

    def between(self, start: float, end: float = float("inf")) -> List[int]:
        return [seq for seq, at in self.sent.items() if start <= at < end]

    def rpc_ok(self, seqs) -> List[int]:
        return [seq for seq in seqs if seq in self.rpc and self.rpc[seq][1]]

    def room_ok(self, seqs) -> List[int]:
        return [seq for seq in seqs if seq in self.delivered]


def _numsub(port: int, *channels: str) -> Dict[str, int]:
    client = redis_py.Redis(host="127.0.0.1", port=port)
    try:
        return {name.decode(): count for name, count in client.pubsub_numsub(*channels)}
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_single_redis_killed_under_traffic_and_restarted(redis_factory, nodes):
    redis = redis_factory()
    health = Health()
    a, b = nodes(["a", "b"], [redis], health)
    bob = _user(b, "bob")
    b.join_room("chat", "r", "bob")
    wait_for(lambda: a.get_cluster_room_socket_ids("chat", "r") == {"bob"})
    traffic = Traffic(a, "b", bob, interval=0.02, rpc_timeout=1.0)
    wait_for(lambda: len(traffic.rpc) >= 40, timeout=10, message="traffic before the fault")

    t_kill = time.monotonic()
    redis.kill()
    wait_for(lambda: health.first(t_kill, False, ("a", "b")), timeout=5, message="every connection reported down")
    t_detected = health.first(t_kill, False, ("a", "b"))

    # Emits during the outage fail at once with a clear error instead of waiting for their timeout.
    started = time.monotonic()
    result = a.emit_cross_server_and_wait("rpc", "during outage", target_server="b", timeout=3)
    fail_fast = time.monotonic() - started
    assert not result.success and result.error_code == "REDIS_UNAVAILABLE"
    assert result.message == "No healthy Redis node available"
    assert fail_fast < 0.5
    assert a.bus is not None and not a.bus.healthy
    # A join during the outage returns at once; its channel is subscribed when Redis is back.
    carol = _user(b, "carol")
    started = time.monotonic()
    b.join_room("late", "r", "carol")
    join_during_outage = time.monotonic() - started
    assert join_during_outage < 1.0

    gevent.sleep(1.0)  # the outage itself lasts one second
    t_restart = time.monotonic()
    redis.start()
    wait_for(lambda: health.first(t_restart, True, ("a", "b")), timeout=10, message="every connection healthy again")
    t_healthy = health.first(t_restart, True, ("a", "b"))
    wait_for(lambda: traffic.rpc_ok(traffic.between(t_restart)), timeout=10, message="an RPC to succeed again")
    t_rpc_back = min(traffic.rpc[seq][0] for seq in traffic.rpc_ok(traffic.between(t_restart)))
    wait_for(lambda: traffic.room_ok(traffic.between(t_restart)), timeout=10, message="a room message again")
    t_room_back = min(traffic.delivered[seq] for seq in traffic.room_ok(traffic.between(t_restart)))

    # Every node subscribed again on its own: the bridge, its node channels and the room channels.
    counts = _numsub(redis.port, "csbp:server_bridge", "ws:chat", "ws:late", "csbp:node:a", "csbp:node:b",
                     "ws:_crossws.cluster")
    assert counts == {"csbp:server_bridge": 2, "ws:chat": 1, "ws:late": 1, "csbp:node:a": 1, "csbp:node:b": 1,
                      "ws:_crossws.cluster": 2}
    a.broadcast_to_room("late", "r", "m2", "joined while Redis was down")
    assert carol.recv_json(timeout=3) == {"event": "m2", "payload": "joined while Redis was down"}

    wait_for(lambda: time.monotonic() - t_healthy > 0.5, timeout=5)  # half a second of normal traffic
    traffic.stop()

    before = traffic.between(0, t_kill)
    outage = traffic.between(t_kill, t_restart)
    recovering = traffic.between(t_restart, t_healthy)
    after = traffic.between(t_healthy)
    assert len(traffic.rpc_ok(before)) == len(before) and len(traffic.room_ok(before)) >= len(before) - 2
    unavailable = [s for s in outage if traffic.rpc[s][2] == "REDIS_UNAVAILABLE"]
    # every RPC sent after the outage was detected failed fast with REDIS_UNAVAILABLE
    for seq in traffic.between(t_detected, t_restart):
        settled_at, success, code = traffic.rpc[seq]
        assert not success and code == "REDIS_UNAVAILABLE" and settled_at - traffic.sent[seq] < 0.5
    # once every connection is healthy again, nothing is lost
    assert traffic.rpc_ok(after) == after and traffic.room_ok(after) == after
    # room messages sent while Redis was down were held in the outage buffer and delivered after
    wait_for(lambda: traffic.room_ok(traffic.between(t_detected, t_restart)) == traffic.between(t_detected, t_restart),
             timeout=5, message="room messages of the outage delivered after recovery")
    assert a.routing_stats["outage_buffered"] >= len(traffic.between(t_detected, t_restart))
    record("redis_single_kill_restart",
           sent_rpcs=traffic.count(), rpcs_ok=len(traffic.rpc_ok(traffic.sent)),
           outage_rpcs=len(outage), outage_fast_failures=len(unavailable),
           outage_rpcs_lost_in_flight=len(outage) - len(unavailable) - len(traffic.rpc_ok(outage)),
           recovering_rpcs=len(recovering), recovering_rpcs_ok=len(traffic.rpc_ok(recovering)),
           recovering_fast_failures=len([s for s in recovering if traffic.rpc[s][2] == "REDIS_UNAVAILABLE"]),
           after_rpcs=len(after), after_rpcs_ok=len(traffic.rpc_ok(after)),
           room_sent=traffic.count(), room_delivered=len(traffic.delivered),
           room_buffered_during_outage=a.routing_stats["outage_buffered"],
           detect_s=round(t_detected - t_kill, 3), fail_fast_ms=round(fail_fast * 1000, 1),
           join_during_outage_ms=round(join_during_outage * 1000, 1),
           healthy_after_restart_s=round(t_healthy - t_restart, 3),
           rpc_back_after_restart_s=round(t_rpc_back - t_restart, 3),
           room_back_after_restart_s=round(t_room_back - t_restart, 3),
           rss_mib_before=mib(traffic.rss_before), rss_mib_after=mib(traffic.rss_after))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_one_of_two_redis_nodes_fails_no_rpc_lost_after_failover(redis_factory, nodes, fault):
    """SIGKILL: a crash (sockets reset). SIGSTOP: a hang (nothing answers, nothing is reset)."""
    r1, r2 = redis_factory(), redis_factory()
    health = Health()
    a, b = nodes(["a", "b"], [r1, r2], health, selection_strategy="round-robin")
    assert a.bus.wait_healthy(5) and b.bus.wait_healthy(5)
    bob = _user(b, "bob")
    b.join_room("chat", "r", "bob")
    wait_for(lambda: a.get_cluster_room_socket_ids("chat", "r") == {"bob"})
    replies_before = b.bus.stats["late_replies"] + a.bus.stats["late_replies"]
    traffic = Traffic(a, "b", bob, interval=0.01, rpc_timeout=2.0)
    wait_for(lambda: len(traffic.rpc) >= 60, timeout=10, message="traffic before the fault")

    t_fault = time.monotonic()
    if fault == "SIGKILL":
        r1.kill()
    else:
        r1.proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: health.first(t_fault, False, ("a", "b"), port=r1.port), timeout=10,
             message="both nodes to see Redis 1 down")
    t_detected = health.first(t_fault, False, ("a", "b"), port=r1.port)
    wait_for(lambda: time.monotonic() - t_detected > 1.5, timeout=5)  # traffic on the surviving node
    t_restart = time.monotonic()
    if fault == "SIGKILL":
        r1.start()
    else:
        r1.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: health.first(t_restart, True, ("a", "b"), port=r1.port), timeout=10,
             message="Redis 1 healthy again on both nodes")
    t_back = health.first(t_restart, True, ("a", "b"), port=r1.port)
    wait_for(lambda: time.monotonic() - t_back > 1.5, timeout=5)  # past the recovery grace, round-robin again
    traffic.stop()

    window = traffic.between(t_fault, t_detected)
    after = traffic.between(t_detected)
    assert traffic.rpc_ok(after) == after, "RPCs lost after failover: %s" % sorted(set(after) - set(traffic.rpc_ok(after)))
    assert traffic.room_ok(after) == after
    assert not [s for s in traffic.sent if traffic.rpc[s][2] == "REDIS_UNAVAILABLE"]
    # Redis 1 is back in the rotation: subscribed by both nodes and publishing again.
    assert _numsub(r1.port, "csbp:server_bridge", "ws:chat") == {"csbp:server_bridge": 2, "ws:chat": 1}
    stats_client = redis_py.Redis(host="127.0.0.1", port=r1.port)
    publishes = stats_client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0)
    stats_client.close()
    assert publishes > 10
    record("redis_two_nodes_one_" + fault.lower(),
           sent_rpcs=traffic.count(), rpcs_ok=len(traffic.rpc_ok(traffic.sent)),
           lost_rpcs=traffic.count() - len(traffic.rpc_ok(traffic.sent)),
           room_sent=traffic.count(), room_delivered=len(traffic.room_ok(traffic.sent)),
           room_duplicates=traffic.duplicates,
           late_replies=b.bus.stats["late_replies"] + a.bus.stats["late_replies"] - replies_before,
           window_rpcs=len(window), window_rpcs_lost=len(window) - len(traffic.rpc_ok(window)),
           window_room_lost=len(window) - len(traffic.room_ok(window)),
           after_detect_rpcs=len(after), after_detect_lost=len(after) - len(traffic.rpc_ok(after)),
           failovers=a.bus.stats["publish_failovers"] + b.bus.stats["publish_failovers"],
           detect_s=round(t_detected - t_fault, 3), longest_send_s=round(traffic.longest_send, 3),
           rejoin_after_restart_s=round(t_back - t_restart, 3), publishes_after_restart=publishes,
           rss_mib_before=mib(traffic.rss_before), rss_mib_after=mib(traffic.rss_after))


@pytest.mark.timeout(60)
def test_subscriber_cut_by_the_pubsub_output_buffer_limit_comes_back(redis_server, nodes):
    redis_server.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 256kb 128kb 0")
    health = Health()
    a, b = nodes(["a", "b"], [redis_server], health)
    bob = _user(b, "bob")
    b.join_room("chat", "r", "bob")
    got_big = []
    b.on_cross_server_event("big", lambda data, callback: got_big.append(len(data["payload"])))

    # One 2 MB event (random, so zstd cannot shrink it under the limit): Redis cuts every subscriber.
    big = base64.b64encode(os.urandom(1536 * 1024)).decode()
    t_sent = time.monotonic()
    a.emit_cross_server("big", big)
    wait_for(lambda: health.first(t_sent, False, ("a", "b"), types=("subscriber",)), timeout=5,
             message="Redis to disconnect the subscribers")
    t_cut = health.first(t_sent, False, ("a", "b"), types=("subscriber",))
    wait_for(lambda: health.first(t_cut, True, ("a", "b"), types=("subscriber",)), timeout=10,
             message="the subscribers to come back")
    t_back = health.first(t_cut, True, ("a", "b"), types=("subscriber",))
    assert _numsub(redis_server.port, "csbp:server_bridge", "ws:chat") == {"csbp:server_bridge": 2, "ws:chat": 1}
    result = a.emit_cross_server_and_wait("rpc", "after the cut", target_server="b", timeout=3)
    assert result.success and result.responses["b"]["payload"] == "after the cut"
    a.broadcast_to_room("chat", "r", "m", "after the cut")
    assert bob.recv_json(timeout=3) == {"event": "m", "payload": "after the cut"}
    record("redis_pubsub_output_buffer_limit", message_bytes=len(big), limit="pubsub 256kb 128kb 0",
           big_message_delivered=len(got_big), cut_after_s=round(t_cut - t_sent, 3),
           back_after_cut_s=round(t_back - t_cut, 3))


@pytest.mark.timeout(60)
def test_exceptions_injected_into_background_greenlets_are_survived(redis_server, nodes):
    health = Health()
    a, b = nodes(["a", "b"], [redis_server], health)
    node = b.bus.redis_nodes[0]
    writer, listener, checker = node._greenlets

    def rpc_works(source, target):
        result = source.emit_cross_server_and_wait("rpc", "ping", target_server=target, timeout=3)
        return result.success

    # 1. The listener, while connected: the supervisor reconnects and resubscribes.
    t0 = time.monotonic()
    listener.kill(RuntimeError("injected fault"), block=False)
    wait_for(lambda: health.first(t0, False, ("b",), types=("subscriber",)), message="the crash to be reported")
    wait_for(lambda: health.first(t0, True, ("b",), types=("subscriber",)), message="the listener to come back")
    listener_back = health.first(t0, True, ("b",), types=("subscriber",)) - t0
    assert rpc_works(a, "b")

    # 2. The listener while Redis is down (it sleeps between connection attempts).
    t1 = time.monotonic()
    redis_server.kill()
    wait_for(lambda: health.first(t1, False, ("b",)), message="Redis down")
    for _ in range(5):
        listener.kill(RuntimeError("injected fault while down"), block=False)
        gevent.sleep(0.03)
    t2 = time.monotonic()
    redis_server.start()
    wait_for(lambda: health.first(t2, True, ("a", "b")), timeout=10, message="recovery after injections")
    assert rpc_works(a, "b") and rpc_works(b, "a")

    # 3. The publisher's writer and the health checker.
    writer.kill(RuntimeError("injected into the writer"), block=False)
    checker.kill(RuntimeError("injected into the health check"), block=False)
    gevent.sleep(0)
    assert wait_for(lambda: rpc_works(b, "a"), timeout=5, message="publishing through the writer again")
    t3 = time.monotonic()
    redis_server.kill()
    wait_for(lambda: health.first(t3, False, ("b",), types=("publisher",)), timeout=5,
             message="the health checker to still notice an outage")
    t4 = time.monotonic()
    redis_server.start()
    wait_for(lambda: health.first(t4, True, ("a", "b")), timeout=10, message="recovery")
    assert rpc_works(a, "b") and rpc_works(b, "a")

    # 4. The cluster heartbeat: b stays in a's registry past the expiry time.
    b._router.membership._heart.kill(RuntimeError("injected into the heartbeat"), block=False)
    t5 = time.monotonic()
    wait_for(lambda: time.monotonic() - t5 > b._router.membership.expiry + 0.5, timeout=10)
    assert "b" in [n["server_name"] for n in a.get_cluster_nodes()]
    record("injected_exceptions", listener_back_s=round(listener_back, 3),
           recovered_after_down_injections_s=round(health.first(t2, True, ("a", "b")) - t2, 3))
