"""Redis Cluster with sharded pub/sub (crossws_sync.bus.cluster), on a real cluster of three
primaries with a replica each: RPCs, room broadcasts and direct messages between two nodes, every
channel SSUBSCRIBEd on the shard owning its slot, a slot migration under traffic, and a shard's
primary SIGKILLed under traffic (delivered / failed fast / lost, and the time until it flows again).
"""
from __future__ import annotations

import subprocess
import time
from typing import Any, Dict, List, Tuple

import gevent
import pytest

from cluster_fixtures import REDIS_CLI, RedisCluster, migrate_slot, resp
from crossws_sync import WebSocketCrossServerAdapter
from crossws_sync.errors import ConfigError
from crossws_sync.wire.slots import key_slot
from faultkit import record
from rawclient import RawClient
from support import wait_for
from test_faults_redis import _user, start_node


PING = 0.3


@pytest.fixture(scope="module")
def rcluster():
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


class Health:
    """Every health hook call: (time, node, type, healthy, event, info)."""

    def __init__(self) -> None:
        self.events: List[Tuple[float, str, str, bool, str, Dict[str, Any]]] = []

    def hook(self, name: str):
        def on_change(healthy: bool, info: Any) -> None:
            self.events.append((time.monotonic(), name, info.type, healthy, info.event, dict(info)))
        return on_change

    def named(self, event: str, after: float = 0.0) -> List[Dict[str, Any]]:
        return [info for stamp, _, _, _, name, info in self.events if name == event and stamp >= after]


@pytest.fixture
def nodes(rcluster):
    made: List[WebSocketCrossServerAdapter] = []

    def make(names, health: Health, config: Any = None):
        result = []
        for name in names:
            adapter = start_node(name, [config or rcluster.url], health)
            made.append(adapter)
            result.append(adapter)
        wait_for(lambda: all(len(n.get_cluster_nodes()) == len(names) for n in result), timeout=10,
                 message="every node to see the others")
        return result

    yield make
    for adapter in made:
        adapter.close(timeout=1)


def _cluster_node(adapter: WebSocketCrossServerAdapter) -> Any:
    assert adapter.bus is not None
    (node,) = adapter.bus.redis_nodes
    return node


def _check_sharded(rcluster: RedisCluster, adapter: WebSocketCrossServerAdapter) -> None:
    """Every wanted channel is SSUBSCRIBEd on the primary owning its slot, and only there."""
    node = _cluster_node(adapter)
    primaries = rcluster.primaries()
    on = {port: set(resp(port, "PUBSUB", "SHARDCHANNELS").split()) for port in primaries}
    for channel in node.wanted_channels:
        owner = rcluster.owner_port(channel)
        assert node.owner_of(channel) == "127.0.0.1:%d" % owner
        assert channel in on[owner], (channel, owner)
        assert all(channel not in on[port] for port in primaries if port != owner)
    for port in rcluster.live_ports():
        assert resp(port, "PUBSUB", "CHANNELS").split() == []  # nothing plainly subscribed


@pytest.mark.timeout(60)
def test_two_nodes_rpc_rooms_direct_messages_over_sharded_pubsub(rcluster, nodes):
    health = Health()
    a, b = nodes(["a", "b"], health)
    bob = _user(b, "bob")
    b.join_room("chat", "r", "bob")
    wait_for(lambda: a.get_cluster_room_socket_ids("chat", "r") == {"bob"})
    assert {n["server_name"] if isinstance(n, dict) else n for n in map(_name, a.get_cluster_nodes())} == {"a", "b"}

    result = a.emit_cross_server_and_wait("rpc", {"n": 1}, target_server="b", timeout=3)
    assert result.success and result.responses["b"]["payload"] == {"n": 1}
    a.broadcast_to_room("chat", "r", "m", "to the room")
    assert bob.recv_json(timeout=3) == {"event": "m", "payload": "to the room"}
    a.to_socket_id("bob", "dm", "direct")
    assert bob.recv_json(timeout=3) == {"event": "dm", "payload": "direct"}
    a.broadcast("all", "to everyone")
    assert bob.recv_json(timeout=3) == {"event": "all", "payload": "to everyone"}
    assert a.find_user_node("bob") == "b" and a.is_user_online("bob")
    stats = a.get_cluster_stats()
    assert stats["online_users"] == 1 and stats["nodes"] == {"a": 0, "b": 1}, stats

    wait_for(lambda: _sharded_ok(rcluster, a) and _sharded_ok(rcluster, b), timeout=5,
             message="every channel on its shard")
    _check_sharded(rcluster, a)
    _check_sharded(rcluster, b)
    for adapter in (a, b):
        node = _cluster_node(adapter)
        assert node.stats["crossslot"] == 0 and node.stats["refused"] == 0
        assert len(node.shards) == 3
    topology = health.named("cluster_topology")
    assert topology and len(topology[0]["shards"]) == 3


def _name(entry: Any) -> Any:
    return entry


def _sharded_ok(rcluster: RedisCluster, adapter: WebSocketCrossServerAdapter) -> bool:
    try:
        _check_sharded(rcluster, adapter)
    except AssertionError:
        return False
    return True


def test_cluster_entry_must_be_alone():
    with pytest.raises(ConfigError, match="only redis_config entry"):
        WebSocketCrossServerAdapter(server_name="x", redis_config=["redis+cluster://127.0.0.1:7000", "redis://h"],
                                    ws_options={"no_server": True})


class Traffic:
    """Numbered RPCs (a -> b), room broadcasts and direct messages (a -> bob on b)."""

    def __init__(self, sender: WebSocketCrossServerAdapter, target: str, member: RawClient, room: Tuple[str, str],
                 interval: float = 0.02, rpc_timeout: float = 1.0) -> None:
        self.sender, self.target, self.member, self.room = sender, target, member, room
        self.interval, self.rpc_timeout = interval, rpc_timeout
        self.sent: Dict[int, float] = {}
        self.rpc: Dict[int, Tuple[float, bool, Any]] = {}
        self.room_got: Dict[int, float] = {}
        self.direct_got: Dict[int, float] = {}
        self.running = True
        self._reader = gevent.spawn(self._read)
        self._writer = gevent.spawn(self._write)

    def _write(self) -> None:
        seq = 0
        while self.running:
            seq += 1
            self.sent[seq] = time.monotonic()
            self.sender.emit_cross_server("rpc", seq, self._settle(seq), target_server=self.target,
                                          timeout=self.rpc_timeout)
            self.sender.broadcast_to_room(self.room[0], self.room[1], "m", seq)
            self.sender.to_socket_id("bob", "dm", seq)
            gevent.sleep(self.interval)

    def _settle(self, seq: int):
        def callback(result: Any) -> None:
            self.rpc[seq] = (time.monotonic(), bool(result.success), result.get("error_code"))
        return callback

    def _read(self) -> None:
        while True:
            message = self.member.recv_json(timeout=60)
            target = self.room_got if message.get("event") == "m" else self.direct_got
            target.setdefault(message["payload"], time.monotonic())

    def stop(self) -> None:
        self.running = False
        self._writer.join(10)
        last = max(self.sent)
        wait_for(lambda: all(seq in self.rpc for seq in range(1, last + 1)), timeout=self.rpc_timeout + 5,
                 message="every RPC settled")
        gevent.sleep(1.0)
        self._reader.kill()

    def between(self, start: float, end: float = float("inf")) -> List[int]:
        return [seq for seq, at in self.sent.items() if start <= at < end]

    def rpc_ok(self, seqs) -> List[int]:
        return [seq for seq in seqs if seq in self.rpc and self.rpc[seq][1]]

    def fast_failed(self, seqs) -> List[int]:
        return [seq for seq in seqs if seq in self.rpc and not self.rpc[seq][1]
                and self.rpc[seq][2] == "REDIS_UNAVAILABLE"]

    def first_back(self, after: float) -> Dict[str, float]:
        """Seconds after ``after`` of the first success of each kind sent after ``after``."""
        seqs = self.between(after)
        result = {}
        for kind, got in (("rpc", {s: self.rpc[s][0] for s in self.rpc_ok(seqs)}),
                          ("room", {s: self.room_got[s] for s in seqs if s in self.room_got}),
                          ("direct", {s: self.direct_got[s] for s in seqs if s in self.direct_got})):
            # "flows again": from the first one of an unbroken run of successes up to the end
            ok = sorted(got)
            missing = [s for s in seqs if s not in got]
            tail = [s for s in ok if not missing or s > max(missing)]
            result[kind] = round(got[tail[0]] - after, 3) if tail else -1.0
        return result


def _room_on_shard(rcluster: RedisCluster, port: int) -> str:
    for i in range(1000):
        if rcluster.owner_port("ws:room%d" % i) == port:
            return "room%d" % i
    raise AssertionError("no room namespace on %d" % port)


@pytest.mark.timeout(90)
def test_slot_migration_of_a_room_channel_under_traffic(rcluster, nodes):
    health = Health()
    a, b = nodes(["a", "b"], health)
    source = rcluster.owner_port("csbp:node:b")
    namespace = _room_on_shard(rcluster, source)
    channel = "ws:" + namespace
    target = [port for port in rcluster.primaries() if port != source][0]
    bob = _user(b, "bob")
    b.join_room(namespace, "r", "bob")
    wait_for(lambda: a.get_cluster_room_socket_ids(namespace, "r") == {"bob"})
    wait_for(lambda: channel in resp(source, "PUBSUB", "SHARDCHANNELS").split(), timeout=5)
    traffic = Traffic(a, "b", bob, (namespace, "r"))
    wait_for(lambda: len(traffic.room_got) >= 30, timeout=10, message="traffic before the migration")

    t_start, t_done = migrate_slot(rcluster, key_slot(channel), source, target)
    wait_for(lambda: channel in resp(target, "PUBSUB", "SHARDCHANNELS").split(), timeout=10,
             message="the room channel SSUBSCRIBEd again on its new owner")
    t_resubscribed = time.monotonic()
    assert channel not in resp(source, "PUBSUB", "SHARDCHANNELS").split()
    wait_for(lambda: time.monotonic() - t_resubscribed > 1.0, timeout=5)
    traffic.stop()

    node_b = _cluster_node(b)
    assert node_b.owner_of(channel) == "127.0.0.1:%d" % target
    assert node_b.stats["crossslot"] == 0 and node_b.stats["refused"] == 0
    assert _cluster_node(a).stats["crossslot"] == 0
    after = traffic.between(t_resubscribed)
    assert after and all(seq in traffic.room_got for seq in after), "room messages flow on the new owner"
    assert traffic.rpc_ok(after) == after
    window = traffic.between(t_start, t_resubscribed)
    lost_room = [s for s in window if s not in traffic.room_got]
    assert health.named("cluster_slots_moved", t_start), "the health hook reports the moved slot"
    record("redis_cluster_slot_migration",
           sent=len(traffic.sent), window_messages=len(window), window_room_lost=len(lost_room),
           window_rpc_failed=len(window) - len(traffic.rpc_ok(window)),
           window_direct_lost=len([s for s in window if s not in traffic.direct_got]),
           migration_s=round(t_done - t_start, 3), resubscribed_after_migration_s=round(t_resubscribed - t_done, 3),
           moved_followed=node_b.stats["moved"] + _cluster_node(a).stats["moved"],
           ask_followed=node_b.stats["ask"] + _cluster_node(a).stats["ask"], crossslot=node_b.stats["crossslot"])


def _slots_of(rcluster: RedisCluster, port: int) -> List[int]:
    """The slots ``port`` serves, ascending (what ``redis-cli --cluster reshard`` takes first)."""
    slots: List[int] = []
    for part in rcluster.primaries_seen_by(rcluster.live_ports()[0])[port].split():
        if not part.startswith("["):
            first, _, last = part.partition("-")
            slots += range(int(first), int(last or first) + 1)
    return sorted(slots)


def _name_in(template: str, slots: Any) -> str:
    for i in range(200000):
        if key_slot(template % i) in slots:
            return template % i
    raise AssertionError("no name for %s in the slots" % template)


@pytest.mark.timeout(90)
def test_redis_cli_reshard_under_traffic(rcluster, nodes):
    """The real ``redis-cli --cluster reshard`` moves 200 slots (among them the room channel's and
    the channel carrying direct messages to b's user) from one primary to another while a sends
    RPCs, room and direct messages to b; every sharded subscription ends on the new owner, no
    CROSSSLOT, traffic after the move is complete, and what was lost in the move is counted."""
    health = Health()
    source = rcluster.primaries()[0]
    target = rcluster.primaries()[1]
    moved = set(_slots_of(rcluster, source)[:200])
    namespace = _name_in("ws:room%d", moved)[3:]
    b_name = _name_in("ws:_crossws.node:b%d", moved)[len("ws:_crossws.node:"):]
    a, b = nodes(["a", b_name], health)
    room_channel, user_channel = "ws:" + namespace, "ws:_crossws.node:" + b_name
    bob = _user(b, "bob")
    b.join_room(namespace, "r", "bob")
    wait_for(lambda: a.get_cluster_room_socket_ids(namespace, "r") == {"bob"})
    wait_for(lambda: a.find_user_node("bob") == b_name, timeout=5)
    for channel in (room_channel, user_channel):
        wait_for(lambda: channel in resp(source, "PUBSUB", "SHARDCHANNELS").split(), timeout=5)
    traffic = Traffic(a, b_name, bob, (namespace, "r"))
    wait_for(lambda: len(traffic.room_got) >= 30, timeout=10, message="traffic before the reshard")

    t_start = time.monotonic()
    out = subprocess.run([REDIS_CLI, "--cluster", "reshard", "127.0.0.1:%d" % source,
                          "--cluster-from", rcluster.node_id(source), "--cluster-to", rcluster.node_id(target),
                          "--cluster-slots", str(len(moved)), "--cluster-yes"],
                         capture_output=True, text=True, timeout=60)
    t_done = time.monotonic()
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert all(rcluster.owner_port(channel) == target for channel in (room_channel, user_channel))
    wait_for(lambda: all(channel in resp(target, "PUBSUB", "SHARDCHANNELS").split()
                         for channel in (room_channel, user_channel)), timeout=10,
             message="the room and user channels SSUBSCRIBEd again on their new owner")
    t_resubscribed = time.monotonic()
    wait_for(lambda: _sharded_ok(rcluster, a) and _sharded_ok(rcluster, b), timeout=10,
             message="every channel on its shard")
    wait_for(lambda: time.monotonic() - t_resubscribed > 1.0, timeout=5)
    traffic.stop()

    for adapter in (a, b):
        _check_sharded(rcluster, adapter)
        assert _cluster_node(adapter).stats["crossslot"] == 0 and _cluster_node(adapter).stats["refused"] == 0
    after = traffic.between(t_resubscribed)
    assert after and traffic.rpc_ok(after) == after
    assert all(s in traffic.room_got for s in after) and all(s in traffic.direct_got for s in after)
    window = traffic.between(t_start, t_resubscribed)
    lost_room = [s for s in window if s not in traffic.room_got]
    lost_direct = [s for s in window if s not in traffic.direct_got]
    assert len(lost_room) + len(lost_direct) <= 10, (lost_room, lost_direct)
    record("redis_cli_reshard", slots=len(moved), sent=len(traffic.sent), window_messages=len(window),
           window_room_lost=len(lost_room), window_direct_lost=len(lost_direct),
           window_rpc_failed=len(window) - len(traffic.rpc_ok(window)),
           reshard_s=round(t_done - t_start, 3), resubscribed_after_reshard_s=round(t_resubscribed - t_done, 3),
           moved_followed=sum(_cluster_node(n).stats["moved"] for n in (a, b)),
           ask_followed=sum(_cluster_node(n).stats["ask"] for n in (a, b)))


@pytest.mark.timeout(120)
def test_shard_primary_sigkilled_under_traffic(rcluster, nodes):
    health = Health()
    a, b = nodes(["a", "b"], health)
    victim = rcluster.owner_port("csbp:server_bridge")  # requests to b cross this shard (replies: csbp:node:a)
    namespace = _room_on_shard(rcluster, victim)
    bob = _user(b, "bob")
    b.join_room(namespace, "r", "bob")
    wait_for(lambda: a.get_cluster_room_socket_ids(namespace, "r") == {"bob"})
    direct_shard = rcluster.owner_port("ws:_crossws.node:b")
    replies_shard = rcluster.owner_port("csbp:node:a")
    traffic = Traffic(a, "b", bob, (namespace, "r"))
    wait_for(lambda: len(traffic.rpc) >= 40, timeout=10, message="traffic before the fault")

    t_kill = time.monotonic()
    rcluster.kill(victim)
    wait_for(lambda: health.named("cluster_failover", t_kill), timeout=30, message="the failover reported")
    t_failover = min(stamp for stamp, _, _, _, name, _ in health.events if name == "cluster_failover" and stamp >= t_kill)
    new_primary = health.named("cluster_failover", t_kill)[0]["new_primary"]
    wait_for(lambda: traffic.rpc_ok(traffic.between(t_failover)) and
             traffic.first_back(t_kill)["room"] > 0, timeout=20, message="traffic flowing again")
    wait_for(lambda: time.monotonic() - t_failover > 2.0, timeout=10)
    traffic.stop()

    back = traffic.first_back(t_kill)
    window = traffic.between(t_kill, t_kill + max(back.values()))
    after = traffic.between(t_kill + max(back.values()) + 0.5)
    assert after, "traffic after recovery"
    assert traffic.rpc_ok(after) == after
    assert all(s in traffic.room_got for s in after) and all(s in traffic.direct_got for s in after)
    for adapter in (a, b):
        node = _cluster_node(adapter)
        assert node.stats["crossslot"] == 0
        assert "127.0.0.1:%d" % victim not in node.shards
    assert rcluster.owner_port("csbp:server_bridge") != victim
    rpc_failed_fast = traffic.fast_failed(window)
    rpc_ok = traffic.rpc_ok(window)
    record("redis_cluster_primary_sigkill",
           sent=len(traffic.sent), window_messages=len(window),
           window_rpc_ok=len(rpc_ok), window_rpc_failed_fast=len(rpc_failed_fast),
           window_rpc_timed_out=len(window) - len(rpc_ok) - len(rpc_failed_fast),
           fast_fail_max_ms=round(max([(traffic.rpc[s][0] - traffic.sent[s]) * 1000 for s in rpc_failed_fast] or [0]), 1),
           window_room_lost=len([s for s in window if s not in traffic.room_got]),
           window_direct_lost=len([s for s in window if s not in traffic.direct_got]),
           direct_on_killed_shard=direct_shard == victim,
           replies_on_killed_shard=replies_shard == victim,
           room_outage_buffered=a.routing_stats.get("outage_buffered"),
           room_outage_flushed=a.routing_stats.get("outage_flushed"),
           failover_reported_s=round(t_failover - t_kill, 3), new_primary=new_primary,
           rpc_back_s=back["rpc"], room_back_s=back["room"], direct_back_s=back["direct"],
           after_messages=len(after))


@pytest.mark.timeout(90)
def test_connection_state_recovery_over_the_cluster(rcluster):
    """A dropped client resumes on another node with every room and direct message once, in
    order: the history keys live on their slots' shards, the positioned bodies are SPUBLISHed."""
    import json

    from faultkit import NodeProcess
    from test_cluster_recovery import Client, Relay, expected, send_both

    options = json.dumps({"max_disconnection": 30.0, "history_size": 1000, "max_replay": 5000})
    things: List[Any] = []
    try:
        a, b, c = (NodeProcess(name, redis_urls=[rcluster.url], heartbeat=0.3, extra=["--recovery", options]).wait_ready()
                   for name in ("A", "B", "C"))
        things += [a, b, c]
        relay = Relay(a.port)
        things.append(relay)
        alice = Client(relay.port, "alice")
        things.append(alice)
        assert alice.ask("join", {"ns": "chat", "room": "lobby"})["node"] == "A"
        bob = Client(c.port, "bob")
        things.append(bob)
        bob.ask("join", {"ns": "chat", "room": "lobby"})
        wait_for(lambda: alice.client._session.session_id is not None, 15)
        send_both(bob, 0, 5, "alice")
        wait_for(lambda: len(alice.received) == 10, 10)
        relay.backend = b.port
        relay.drop()
        wait_for(lambda: not alice.client.connected, 15)
        send_both(bob, 5, 10, "alice")  # sent while alice is away
        wait_for(lambda: len(alice.opens) == 2, 15)
        assert alice.opens[1]["recovered"] is True
        send_both(bob, 15, 5, "alice")
        wait_for(lambda: len(alice.received) >= 40, 15)
        gevent.sleep(0.5)
        # Each stream in order, every message once. Across streams (room vs direct) the order is
        # not kept on a cluster: their keys and channels live on different shards.
        assert sorted(alice.received, key=lambda item: (item[0], item[1])) == sorted(expected(0, 20))
        for kind in ("chat", "dm"):
            assert [body for what, body in alice.received if what == kind] == list(range(20))
        sessions = sum(int(resp(port, "EVAL", "return #redis.call('KEYS', 'ws:_crossws.s:{*}')", "0").strip() or 0)
                       for port in rcluster.primaries())
        assert sessions >= 1  # sessions carry a hash tag
    finally:
        for thing in reversed(things):
            thing.close() if hasattr(thing, "close") else thing.stop()


def _owner_or_none(rcluster: RedisCluster, name: str) -> Any:
    try:
        return rcluster.owner_port(name)
    except RuntimeError:  # no primary serves the slot right now (failing over)
        return None


@pytest.mark.timeout(150)
def test_with_history_replicas_a_client_away_across_a_shard_failover_is_recovered(rcluster):
    """``history_replicas=1``: the primary of the shard holding the room's history stream is
    SIGKILLed while alice is away and bob keeps sending; its replica is promoted, the killed node
    comes back as the new primary's replica; alice returns with ``recovered: true`` and every room
    and direct message once, in order per stream (the epoch is replicated data, so the promoted
    replica continues the stream)."""
    import json

    from faultkit import NodeProcess
    from test_cluster_recovery import KeepSending, alice_then_away, back_with_everything

    options = json.dumps({"max_disconnection": 30.0, "history_replicas": 1, "replica_timeout": 0.3})
    for port in [port for port, proc in rcluster.procs.items() if proc is None]:
        rcluster.restart(port)  # killed by an earlier test: every primary needs a replica for WAIT 1
    victim = rcluster.owner_port("r\x1fchat\x1flobby")  # the slot of the room stream's keys (hash tag)
    things: List[Any] = []
    try:
        a, b = (NodeProcess(name, redis_urls=[rcluster.url], heartbeat=0.3, extra=["--recovery", options]).wait_ready()
                for name in ("A", "B"))
        things += [a, b]
        relay, alice, bob = alice_then_away(a.port, b.port, things)
        sender = KeepSending(bob)
        wait_for(lambda: len(sender.sent) >= 10, 10)
        t_kill = time.monotonic()
        rcluster.kill(victim)
        wait_for(lambda: _owner_or_none(rcluster, "r\x1fchat\x1flobby") not in (None, victim), timeout=30,
                 interval=0.1, message="the replica promoted")
        t_promoted = time.monotonic()
        rcluster.restart(victim)  # back as the new primary's replica: WAIT can be satisfied again
        t_replica = time.monotonic()
        wait_for(lambda: time.monotonic() - t_replica > 1.0, 5)
        sent = sender.stop()

        back_with_everything(relay, b.port, alice, sent)
        record("redis_cluster_failover_recovery_replicated", sent_while_away=len(sent),
               promoted_s=round(t_promoted - t_kill, 3), old_primary_back_as_replica_s=round(t_replica - t_kill, 3),
               recovered=alice.opens[1]["recovered"], received=len(alice.received))
    finally:
        for thing in reversed(things):
            thing.close() if hasattr(thing, "close") else thing.stop()
        if rcluster.procs.get(victim) is None:
            rcluster.restart(victim)


@pytest.mark.timeout(60)
def test_a_cluster_with_a_password_in_both_forms_and_a_duplicate_name_detected():
    """``requirepass`` on every node: the URL form and the dict form both authenticate; a wrong
    password is reported with ``reason="auth"``; a second live bus with our name is detected
    (PUBSUB SHARDNUMSUB on the node channel's shard); the password is in no repr or health info."""
    from crossws_sync.bus.bus import CrossServerBus

    cluster = RedisCluster(size=3, replicas=0, password="s3cret-pw").start()
    buses: List[CrossServerBus] = []
    try:
        seeds = ["127.0.0.1:%d" % port for port in cluster.ports]
        conflicts: List[Any] = []
        health: List[Any] = []
        url = "redis+cluster://:s3cret-pw@" + ",".join(seeds)
        for name, config in (("same", url), ("same", {"cluster": seeds, "password": "s3cret-pw"}),
                             ("peer", {"cluster": [[host, int(port)] for host, port in (s.split(":") for s in seeds)],
                                       "password": "s3cret-pw"})):
            bus = CrossServerBus(server_name=name, redis_config=[config], redis_ping_interval=PING,
                                 redis_ping_timeout=PING, on_server_name_conflict=conflicts.append,
                                 on_redis_health_change=lambda ok, info: health.append(dict(info)))
            buses.append(bus)
            assert bus.wait_healthy(10)
        buses[2].on_cross_server_event("ping", lambda data, callback: callback and callback("pong"))
        result = buses[0].emit_cross_server_and_wait("ping", {}, target_server="peer", timeout=3)
        assert result.success and result.responses["peer"]["payload"] == "pong"
        wait_for(lambda: conflicts, timeout=5, message="the duplicate server name detected")
        wrong = CrossServerBus(server_name="w", redis_config=[{"cluster": seeds, "password": "nope"}],
                               redis_ping_interval=PING, redis_ping_timeout=PING,
                               on_redis_health_change=lambda ok, info: health.append(dict(info)))
        buses.append(wrong)
        wait_for(lambda: any(h.get("reason") == "auth" and h["event"] == "auth_failed" for h in health), timeout=5)
        assert not wrong.healthy
        text = repr(buses) + repr([b.redis_nodes for b in buses]) + repr(health)
        assert "s3cret-pw" not in text
    finally:
        for bus in buses:
            bus.close()
        cluster.stop()
