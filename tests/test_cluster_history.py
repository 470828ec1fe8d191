"""History streams and sessions on a real Redis Cluster (crossws_sync/bus/cluster_history.py):
commands routed by slot, the script per shard, the positioned body SPUBLISHed on the channel's
shard, sessions with a hash tag, a flushed script and a MOVED slot followed."""
from __future__ import annotations

from typing import Any, List

import gevent
import pytest

from cluster_fixtures import RedisCluster, migrate_slot, resp
from crossws_sync.bus.cluster import ClusterNode
from crossws_sync.bus.cluster_history import ClusterHistoryStore
from crossws_sync.bus.history import new_session_id
from crossws_sync.wire.envelope import EnvelopeCodec
from crossws_sync.wire.positions import parse_position
from crossws_sync.wire.slots import key_slot
from support import wait_for

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def rcluster():
    cluster = RedisCluster(size=3, replicas=0).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def setup(rcluster):
    received: List[Any] = []
    node = ClusterNode(rcluster.url, server_name="h", on_message=lambda n, channel, raw: received.append((channel, raw)),
                       on_health_change=lambda *a: None, on_subscription_error=lambda *a: None,
                       ping_interval=0.3, ping_timeout=0.5)
    node.start(["ws:chan", "ws:other"])
    assert node.wait_started(10)
    wait_for(lambda: node.subscriber_healthy, timeout=10, message="subscribed on the shards")
    store = ClusterHistoryStore(node, prefix="ws:", history_size=100, stream_ttl=60)
    yield node, store, received
    store.close()
    node.close()


def _stream_on_other_shard(rcluster: RedisCluster, store: ClusterHistoryStore, channel: str) -> str:
    for i in range(1000):
        stream = "r\x1fchat\x1froom%d" % i
        if rcluster.owner_port(store.stream_key(stream)) != rcluster.owner_port(channel):
            return stream
    raise AssertionError("no stream on another shard")


def test_append_spublishes_on_the_channel_shard_in_order_and_reads_back(rcluster, setup):
    node, store, received = setup
    codec = EnvelopeCodec("json")
    stream = _stream_on_other_shard(rcluster, store, "ws:chan")
    assert key_slot(store.stream_key(stream)) == key_slot(store.meta_key(stream))
    lost: List[BaseException] = []
    for i in range(20):
        raw, index = codec.encode_positioned({"data": i, "senderServer": "n1"}, "ws:chan")
        store.append(stream, "ws:chan", raw, index, lost.append)
    wait_for(lambda: len(received) == 20, timeout=5, message="every positioned body published")
    assert not lost
    decoded = [codec.decode(raw) for _, raw in received]
    assert [m["data"] for m in decoded] == list(range(20))
    assert [parse_position(m["streamPos"])[0] for m in decoded] == list(range(1, 21))
    assert [offset for offset, *_ in store.read(stream, 18, 10)] == [19, 20]
    assert store.first_offset(stream) == 1
    top = store.top(stream)
    assert top[0] == 20 and store.tops([stream, "u\x1fnobody"]) == {stream: top, "u\x1fnobody": (0, store.tops(["u\x1fnobody"])["u\x1fnobody"][1])}
    # a flushed script on the stream's shard is loaded again; nothing lost, nothing reordered
    resp(rcluster.owner_port(store.stream_key(stream)), "SCRIPT", "FLUSH")
    for i in range(20, 30):
        raw, index = codec.encode_positioned({"data": i, "senderServer": "n1"}, "ws:chan")
        store.append(stream, "ws:chan", raw, index, lost.append)
    wait_for(lambda: len(received) == 30, timeout=5)
    assert [codec.decode(raw)["data"] for _, raw in received] == list(range(30)) and not lost
    assert node.stats["crossslot"] == 0


def test_sessions_have_a_hash_tag_and_are_taken_once(rcluster, setup):
    node, store, _ = setup
    session_id = new_session_id()
    key = store.session_key(session_id)
    assert key == "ws:_crossws.s:{%s}" % session_id
    store.save_session(session_id, {"u": "alice", "b": "0000000000000003:abcd1234"}, 30)
    wait_for(lambda: node.command_for_key(key, "EXISTS", key) == 1)
    assert 0 < node.command_for_key(key, "TTL", key) <= 30
    assert store.take_session(session_id) == {"u": "alice", "b": "0000000000000003:abcd1234"}
    assert store.take_session(session_id) is None


def test_a_moved_stream_slot_is_followed(rcluster, setup):
    node, store, received = setup
    codec = EnvelopeCodec("json")
    stream = "u\x1fmover"
    key = store.stream_key(stream)
    raw, index = codec.encode_positioned({"data": "before", "senderServer": "n1"}, "ws:other")
    store.append(stream, "ws:other", raw, index, lambda error: None)
    wait_for(lambda: len(received) == 1, timeout=5)
    source = rcluster.owner_port(key)
    target = [port for port in rcluster.primaries() if port != source][0]
    migrate_slot(rcluster, key_slot(key), source, target)  # the stream's keys move with MIGRATE
    lost: List[BaseException] = []
    raw, index = codec.encode_positioned({"data": "after", "senderServer": "n1"}, "ws:other")
    store.append(stream, "ws:other", raw, index, lost.append)
    wait_for(lambda: len(received) == 2, timeout=5, message="the append after the move")
    assert not lost and store.stats["redirects"] >= 1
    assert node.owner_of(key) == "127.0.0.1:%d" % target
    # The script was written by another Redis process (the old owner's run id is in the meta hash):
    # as after a failover, the stream starts a new epoch, so no position from before is trusted.
    before, after = (parse_position(codec.decode(raw)["streamPos"]) for _, raw in received)
    assert after[0] == 1 and after[1] != before[1]
    assert [codec.decode(body)["data"] for *_, body in store.read(stream, 0, 10)] == ["after"]


def test_appends_keep_their_order_while_the_script_loads(rcluster, setup):
    node, store, received = setup
    codec = EnvelopeCodec("json")
    stream = "u\x1forder"
    lost: List[BaseException] = []
    for i in range(40):  # the first ones wait for the script; later ones must not overtake them
        raw, index = codec.encode_positioned({"data": i, "senderServer": "n1"}, "ws:other")
        store.append(stream, "ws:other", raw, index, lost.append)
        gevent.sleep(0)
    wait_for(lambda: len(received) == 40, timeout=5)
    assert [codec.decode(raw)["data"] for _, raw in received] == list(range(40)) and not lost
    assert store.stats["script_loads"] == 1
