"""Redis Sentinel failover for real: one primary, one replica, three sentinels (quorum 2,
``down-after-milliseconds`` 1000), the primary SIGKILLed under a steady stream of RPCs, room
messages and direct messages between two nodes; and connection state recovery across the
failover. The figures of docs/reliability.md ("Redis Sentinel failover") come from here.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, List

import gevent
import pytest

from crossws_sync import WebSocketCrossServerAdapter
from faultkit import NodeProcess, record
from rawclient import RawClient
from sentinel_topology import SentinelTopology, in_sync, role
from support import wait_for
from test_cluster_recovery import NS, ROOM, KeepSending, alice_then_away, back_with_everything, expected, send_both
from test_faults_redis import Health, Traffic, _user, start_node



@pytest.fixture
def topology():
    made = SentinelTopology().start()
    yield made
    made.stop()


class MixedTraffic(Traffic):
    """:class:`Traffic` (numbered RPCs a -> b and room messages to a member on b) plus a direct
    message (``to_socket_id``) with the same number to another user on b."""

    def __init__(self, sender: WebSocketCrossServerAdapter, target: str, member: RawClient, direct: RawClient,
                 **options: Any) -> None:
        self.direct = direct
        self.direct_delivered: Dict[int, float] = {}
        self._direct_reader = gevent.spawn(self._read_direct)
        super().__init__(sender, target, member, **options)

    def _write(self) -> None:
        seq = 0
        while self.running:
            seq += 1
            self.sent[seq] = started = time.monotonic()
            self.sender.emit_cross_server("rpc", seq, self._settle(seq), target_server=self.target,
                                          timeout=self.rpc_timeout)
            self.sender.broadcast_to_room(self.room[0], self.room[1], "m", seq)
            self.sender.to_socket_id("dave", "d", seq)
            self.longest_send = max(self.longest_send, time.monotonic() - started)
            gevent.sleep(self.interval)

    def _read_direct(self) -> None:
        while True:
            message = self.direct.recv_json(timeout=60)
            if message.get("event") == "d":
                self.direct_delivered.setdefault(message["payload"], time.monotonic())

    def stop(self) -> None:
        super().stop()
        self._direct_reader.kill()

    def direct_ok(self, seqs) -> List[int]:
        return [seq for seq in seqs if seq in self.direct_delivered]


def _adapters(topology: SentinelTopology, health: Health) -> List[WebSocketCrossServerAdapter]:
    made = []
    for name in ("a", "b"):
        made.append(start_node(name, [topology.url + "?sentinel_timeout=0.3"], health))
    wait_for(lambda: all(len(n.get_cluster_nodes()) == 2 for n in made), timeout=10, message="the nodes to meet")
    return made


@pytest.mark.timeout(90)
def test_primary_sigkilled_under_rpcs_room_and_direct_messages_traffic_comes_back(topology):
    health = Health()
    a, b = nodes = _adapters(topology, health)
    try:
        bob, dave = _user(b, "bob"), _user(b, "dave")
        b.join_room("chat", "r", "bob")
        wait_for(lambda: a.get_cluster_room_socket_ids("chat", "r") == {"bob"})
        wait_for(lambda: a.find_user_node("dave") == "b", timeout=5)
        traffic = MixedTraffic(a, "b", bob, dave, interval=0.02, rpc_timeout=1.0)
        wait_for(lambda: len(traffic.rpc) >= 40, timeout=10, message="traffic before the fault")

        old_port = topology.primary.port
        t_kill = time.monotonic()
        topology.primary.kill()
        new_port = topology.wait_failover(old_port)
        t_switch = time.monotonic()
        assert new_port == topology.replica.port and role(new_port) == "master"

        def back(ok) -> float:
            seqs = ok(traffic.between(t_kill))
            return min(traffic.sent[seq] for seq in seqs) if seqs else 0.0

        # Traffic flows again by itself: nodes re-resolve the primary and resubscribe everything.
        wait_for(lambda: back(traffic.rpc_ok) and back(traffic.room_ok) and back(traffic.direct_ok), timeout=20,
                 message="RPCs, room and direct messages to flow again")
        t_back = max(back(traffic.rpc_ok), back(traffic.room_ok), back(traffic.direct_ok))
        wait_for(lambda: health.first(t_kill, True, ("a", "b")), timeout=10, message="every connection healthy again")
        t_healthy = health.first(t_kill, True, ("a", "b"))
        t_down = health.first(t_kill, False, ("a", "b"))
        wait_for(lambda: time.monotonic() - max(t_back, t_healthy) > 1.0, timeout=5)  # a second of normal traffic
        traffic.stop()

        # every node is on the new primary, subscribed to everything it needs there
        for node in nodes:
            redis_node = node.bus.redis_nodes[0]
            assert redis_node.label == "sentinel:mymaster"
            assert redis_node.sentinel.address == ("127.0.0.1", new_port)
            assert redis_node.publisher_healthy and redis_node.subscriber_healthy
            # the liveness probe runs on every bus node (with redis_force_ping, the default)
            assert redis_node.probe_channel.startswith("csbp:probe:%s:" % node.get_server_name())
            wait_for(lambda: redis_node.probe_latency > 0, timeout=3, message="a probe round trip")

        before = traffic.between(0, t_kill)
        window = traffic.between(t_kill, max(t_back, t_healthy))
        after = traffic.between(max(t_back, t_healthy))
        # before the fault, the pair exchanges everything (the adapter pair over Sentinel works)
        assert traffic.rpc_ok(before) == before
        assert traffic.room_ok(before) == before and traffic.direct_ok(before) == before
        # nothing waits forever: every RPC settled, a failure with a reason
        assert all(seq in traffic.rpc for seq in traffic.sent)
        failed = [seq for seq in window if not traffic.rpc[seq][1]]
        codes = {traffic.rpc[seq][2] for seq in failed}
        # REDIS_UNAVAILABLE (no healthy node: failed at once), or no code: the RPC timed out
        assert codes <= {"REDIS_UNAVAILABLE", None}, codes
        assert all(traffic.rpc[seq][0] - traffic.sent[seq] < traffic.rpc_timeout + 0.5 for seq in failed)
        fast = [seq for seq in failed if traffic.rpc[seq][2] == "REDIS_UNAVAILABLE"
                and traffic.rpc[seq][0] - traffic.sent[seq] < 0.5]
        # once healthy again, nothing is lost
        assert traffic.rpc_ok(after) == after
        assert traffic.room_ok(after) == after and traffic.direct_ok(after) == after
        assert t_back - t_kill < 15
        record("sentinel_primary_sigkill",
               sent=traffic.count(), window_sent=len(window), after_sent=len(after),
               window_rpcs_ok=len(traffic.rpc_ok(window)), window_rpcs_failed_fast=len(fast),
               window_rpcs_failed_slow=len(failed) - len(fast),
               window_rpc_codes=sorted(str(code) for code in codes),
               window_room_delivered=len(traffic.room_ok(window)),
               window_direct_delivered=len(traffic.direct_ok(window)),
               room_lost=len(traffic.sent) - len(traffic.delivered), direct_lost=len(traffic.sent) - len(traffic.direct_delivered),
               room_duplicates=traffic.duplicates,
               detect_s=round(t_down - t_kill, 3) if t_down else None,
               sentinels_switched_s=round(t_switch - t_kill, 3),
               traffic_back_s=round(t_back - t_kill, 3), healthy_s=round(t_healthy - t_kill, 3),
               traffic_back_after_switch_s=round(t_back - t_switch, 3),
               longest_send_ms=round(traffic.longest_send * 1000, 1))
    finally:
        for node in nodes:
            node.close(timeout=1)


@pytest.mark.timeout(90)
def test_recovery_across_a_failover_says_not_recovered_then_recovers_on_the_new_primary(topology):
    """A client away during the failover comes back with ``recovered`` false: the history's epoch
    changes with the Redis run id (the new primary may lack writes the old one acknowledged, so no
    continuity is promised). A client away after the failover is recovered with every message."""
    options = json.dumps({"max_disconnection": 30.0})
    things: List[Any] = []
    try:
        a = NodeProcess("A", redis_urls=[topology.url], heartbeat=0.3, extra=["--recovery", options]).wait_ready()
        things.append(a)
        b = NodeProcess("B", redis_urls=[topology.url], heartbeat=0.3, extra=["--recovery", options]).wait_ready()
        things.append(b)
        relay, alice, bob = alice_then_away(a.port, b.port, things)

        # away across the failover (refused until the cluster serves again: a client coming back
        # while no history node answers gets no session at all, which is another test's subject)
        first_session = alice.client._session.session_id
        t_kill = time.monotonic()
        old = topology.primary.port
        topology.primary.kill()
        topology.wait_failover(old)

        def bob_sends(start: int) -> bool:
            try:
                send_both(bob, start, 1, "alice")
                return True
            except AssertionError:
                return False

        wait_for(lambda: bob_sends(100), timeout=20, interval=0.2, message="the nodes to serve again")
        t_served = time.monotonic()
        relay.backend = b.port
        wait_for(lambda: len(alice.opens) == 2, 20)
        assert alice.opens[1]["recovered"] is False  # a new epoch: not recovered, and told so
        assert alice.ask("whoami", {})["node"] == "B"

        # away after the failover: recovered, nothing lost, in order, once
        alice.ask("join", {"ns": NS, "room": ROOM})
        wait_for(lambda: alice.client._session.session_id not in (None, first_session), 5)
        gevent.sleep(0.3)
        received = len(alice.received)
        send_both(bob, 200, 3, "alice")
        wait_for(lambda: len(alice.received) == received + 6, 10)
        relay.drop()
        wait_for(lambda: not alice.client.connected or len(alice.opens) == 3, 5)
        send_both(bob, 203, 5, "alice")  # sent while alice is away
        wait_for(lambda: len(alice.opens) == 3, 20)
        assert alice.opens[2]["recovered"] is True
        send_both(bob, 208, 2, "alice")
        wait_for(lambda: len(alice.received) >= received + 20, 10)
        gevent.sleep(0.3)
        assert alice.received[received:] == expected(200, 10)
        record("sentinel_failover_recovery", served_again_s=round(t_served - t_kill, 3),
               recovered_across_failover=alice.opens[1]["recovered"], recovered_after_failover=alice.opens[2]["recovered"])
    finally:
        for thing in reversed(things):
            thing.close() if hasattr(thing, "close") else thing.stop()


@pytest.mark.timeout(120)
def test_with_history_replicas_a_client_away_across_the_failover_is_recovered_with_every_message():
    """``history_replicas=1`` on a primary with two replicas: the primary is SIGKILLed while alice
    is away and bob keeps sending room and direct messages; after the failover alice comes back
    with ``recovered: true`` and every message bob's node accepted, once, in order per stream
    (appends are published only once a replica holds them, the epoch is replicated data, and a
    message whose append was cut off by the kill is found again instead of appended twice)."""
    topology = SentinelTopology(replicas=2).start()
    options = json.dumps({"max_disconnection": 30.0, "history_replicas": 1, "replica_timeout": 0.3})
    things: List[Any] = []
    try:
        a = NodeProcess("A", redis_urls=[topology.url], heartbeat=0.3, extra=["--recovery", options]).wait_ready()
        things.append(a)
        b = NodeProcess("B", redis_urls=[topology.url], heartbeat=0.3, extra=["--recovery", options]).wait_ready()
        things.append(b)
        relay, alice, bob = alice_then_away(a.port, b.port, things)
        sender = KeepSending(bob)  # alice is away, refused by the relay
        wait_for(lambda: len(sender.sent) >= 10, 10)
        old = topology.primary.port
        t_kill = time.monotonic()
        topology.primary.kill()
        new_port = topology.wait_failover(old)
        t_switch = time.monotonic()
        others = [r.port for r in topology.replicas if r.port != new_port]
        wait_for(lambda: all(in_sync(port) for port in others), timeout=20, interval=0.1,
                 message="the other replica to follow the new primary")
        t_synced = time.monotonic()
        wait_for(lambda: time.monotonic() - t_synced > 1.0, 5)  # a second of traffic after the failover
        sent = sender.stop()
        during = len([i for i in sent if i >= 15])

        back_with_everything(relay, b.port, alice, sent)
        record("sentinel_failover_recovery_replicated", sent_while_away=len(sent), sent_after_kill_approx=during,
               sentinels_switched_s=round(t_switch - t_kill, 3), replica_resynced_s=round(t_synced - t_kill, 3),
               recovered=alice.opens[1]["recovered"], received=len(alice.received))
    finally:
        for thing in reversed(things):
            thing.close() if hasattr(thing, "close") else thing.stop()
        topology.stop()


@pytest.mark.timeout(60)
def test_every_cross_server_feature_over_sentinel(topology):
    """RPC, room, direct and broadcast messages, the registry and its stats, through a
    Sentinel-managed primary."""
    health = Health()
    a, b = _adapters(topology, health)
    try:
        bob = _user(b, "bob")
        b.join_room("chat", "r", "bob")
        wait_for(lambda: a.get_cluster_room_socket_ids("chat", "r") == {"bob"})
        result = a.emit_cross_server_and_wait("rpc", {"n": 1}, target_server="b", timeout=3)
        assert result.success and result.responses["b"]["payload"] == {"n": 1}
        a.broadcast_to_room("chat", "r", "m", "to the room")
        assert bob.recv_json(timeout=3) == {"event": "m", "payload": "to the room"}
        a.to_socket_id("bob", "dm", "direct")
        assert bob.recv_json(timeout=3) == {"event": "dm", "payload": "direct"}
        a.broadcast("all", "to everyone")
        assert bob.recv_json(timeout=3) == {"event": "all", "payload": "to everyone"}
        assert a.find_user_node("bob") == "b"
        stats = a.get_cluster_stats()
        assert stats["online_users"] == 1 and stats["nodes"] == {"a": 0, "b": 1}, stats
        assert a.bus.redis_nodes[0].label == "sentinel:mymaster"
        bob.close()
    finally:
        for adapter in (a, b):
            adapter.close(timeout=1)
