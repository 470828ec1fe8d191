"""The sharded subscriber of one primary (crossws_sync.bus.shards) against a real Redis Cluster:
one SSUBSCRIBE per slot (never CROSSSLOT), MOVED for a slot served elsewhere, resubscribe on reconnect."""
from __future__ import annotations

from typing import Any, List

import gevent
import pytest

from cluster_fixtures import RedisCluster, resp
from crossws_sync.bus.connection import RedisConnection, RedisSettings
from crossws_sync.bus.shards import ShardSubscriber
from crossws_sync.wire.slots import key_slot
from support import wait_for

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def rcluster():
    cluster = RedisCluster(size=3, replicas=0).start()
    yield cluster
    cluster.stop()


def _channels_on(cluster: RedisCluster, port: int, count: int, prefix: str) -> List[str]:
    """``count`` channels of different slots served by ``port``."""
    names: List[str] = []
    slots = set()
    i = 0
    while len(names) < count:
        name = "%s%d" % (prefix, i)
        i += 1
        if key_slot(name) not in slots and cluster.owner_port(name) == port:
            slots.add(key_slot(name))
            names.append(name)
    return names


def test_one_ssubscribe_per_slot_moved_and_resubscribe(rcluster):
    port = rcluster.primaries()[0]
    other = rcluster.primaries()[1]
    settings = RedisSettings(host="127.0.0.1", port=port, connect_timeout=1.0, timeout=1.0)
    connections: List[RedisConnection] = []

    def connect() -> RedisConnection:
        conn = RedisConnection.open(settings)
        connections.append(conn)
        return conn

    messages: List[Any] = []
    moved: List[Any] = []
    refused: List[Any] = []
    states: List[bool] = []
    sub = ShardSubscriber(connect, label="127.0.0.1:%d" % port, on_message=lambda c, raw: messages.append((c, raw)),
                          on_moved=lambda chans, reason, error: moved.append((chans, reason, error)),
                          on_refused=lambda chans, error: refused.append((chans, error)),
                          on_state=lambda up, error: states.append(up), closed=lambda: False,
                          ping_interval=0.2, ping_timeout=1.0, force_ping=True)
    mine = _channels_on(rcluster, port, 5, "shard-test-")
    foreign = _channels_on(rcluster, other, 1, "foreign-")
    sub.assign(mine + foreign)
    listener = gevent.spawn(sub.run)
    try:
        wait_for(lambda: set(mine) <= sub.confirmed, timeout=5, message="every own channel confirmed")
        wait_for(lambda: moved, timeout=5, message="MOVED for the foreign channel")
        assert moved[0][0] == foreign and moved[0][1] == "moved" and moved[0][2].startswith("MOVED")
        assert not refused  # five slots in one assign: five SSUBSCRIBEs, no CROSSSLOT
        assert set(resp(port, "PUBSUB", "SHARDCHANNELS").split()) >= set(mine)
        resp(port, "SPUBLISH", mine[0], "hello")
        wait_for(lambda: messages == [(mine[0], b"hello")], timeout=5)
        # the connection is cut: every assigned channel comes back, still one slot per command
        sub.release(foreign, unsubscribe=False)
        resp(port, "CLIENT", "KILL", "TYPE", "pubsub")
        wait_for(lambda: len(connections) == 2 and set(mine) <= sub.confirmed, timeout=5, message="resubscribed")
        assert states.count(False) >= 1 and not refused
        resp(port, "SPUBLISH", mine[1], "again")
        wait_for(lambda: (mine[1], b"again") in messages, timeout=5)
        # a release sends SUNSUBSCRIBE, which is not mistaken for a slot that moved away
        sub.release(mine[:2], unsubscribe=True)
        wait_for(lambda: not set(mine[:2]) & set(resp(port, "PUBSUB", "SHARDCHANNELS").split()), timeout=5)
        gevent.sleep(0.2)
        assert len(moved) == 1
    finally:
        sub.stop()
        listener.kill()
