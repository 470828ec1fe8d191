"""crossws_sync.bus.sentinel: asking real sentinels (one primary, one replica, three sentinels)
where the primary is, skipping sentinels that are down, refusing an address that is not a
primary; and one RedisNode over a Sentinel entry."""
from __future__ import annotations

import time
from typing import List

import pytest
import redis
from gevent.server import StreamServer

from crossws_sync.bus.connection import RedisSettings
from crossws_sync.bus.node import RedisNode
from crossws_sync.bus.settings import describe_config
from crossws_sync.bus.sentinel import ROLE_ATTEMPTS, SentinelPrimary
from crossws_sync.config import sentinel_config
from sentinel_topology import SERVICE, SentinelTopology
from support import free_port, wait_for


@pytest.fixture(scope="module")
def topology():
    """One topology for the module: no test here changes it."""
    made = SentinelTopology().start()
    yield made
    made.stop()


def _settings() -> RedisSettings:
    return RedisSettings(connect_timeout=1.0, timeout=1.0)


def _role(conn) -> bytes:
    conn.sendall(b"*1\r\n$4\r\nROLE\r\n")
    return conn.next(2.0)[0]


class FakeSentinel:
    """A sentinel that always names ``address`` as the primary (and counts the questions)."""

    def __init__(self, address) -> None:
        self.address = address
        self.asked = 0
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, sock, _address) -> None:
        data = b""
        while not data.endswith(b"mymaster\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk
        self.asked += 1
        host, port = self.address[0].encode(), str(self.address[1]).encode()
        sock.sendall(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(host), host, len(port), port))
        sock.recv(16)

    def close(self) -> None:
        self.server.stop(timeout=1)


@pytest.mark.timeout(40)
def test_the_sentinels_name_the_primary_and_a_dead_sentinel_is_skipped(topology):
    dead = free_port()
    config = sentinel_config({"sentinels": [["127.0.0.1", dead]] + [["127.0.0.1", s.port] for s in topology.sentinels],
                              "service_name": SERVICE, "sentinel_timeout": 0.3})
    primary = SentinelPrimary(config, connect_timeout=1.0)
    assert primary.resolve() == ("127.0.0.1", topology.primary.port)
    # the sentinel that answered is asked first from now on: no more time lost on the dead one
    started = time.monotonic()
    assert primary.resolve() == ("127.0.0.1", topology.primary.port)
    assert time.monotonic() - started < 0.2
    conn = primary.open(_settings())
    try:
        assert _role(conn) == b"master" and primary.address == ("127.0.0.1", topology.primary.port)
    finally:
        conn.close()


@pytest.mark.timeout(40)
def test_no_sentinel_answering_or_an_unknown_service_is_a_connection_error(topology):
    dead = [free_port(), free_port()]
    primary = SentinelPrimary(sentinel_config({"sentinels": [["127.0.0.1", p] for p in dead], "service_name": SERVICE}),
                              connect_timeout=1.0)
    with pytest.raises(redis.ConnectionError) as info:
        primary.resolve()
    assert all(str(port) in str(info.value) for port in dead)
    unknown = SentinelPrimary(sentinel_config("redis+sentinel://127.0.0.1:%d/nosuch" % topology.sentinels[0].port),
                              connect_timeout=1.0)
    with pytest.raises(redis.ConnectionError, match="does not know nosuch"):
        unknown.open(_settings())


@pytest.mark.timeout(40)
def test_an_address_that_is_not_the_primary_is_refused_after_asking_again(topology):
    liar = FakeSentinel(("127.0.0.1", topology.replica.port))  # stale: names the replica
    try:
        primary = SentinelPrimary(sentinel_config({"sentinels": [["127.0.0.1", liar.port]], "service_name": SERVICE}),
                                  connect_timeout=1.0)
        with pytest.raises(redis.ConnectionError, match="is a slave"):
            primary.open(_settings())
        assert liar.asked == ROLE_ATTEMPTS and primary.address is None
        liar.address = ("127.0.0.1", topology.primary.port)
        conn = primary.open(_settings())
        assert _role(conn) == b"master"
        conn.close()
    finally:
        liar.close()


@pytest.mark.timeout(40)
def test_a_redis_node_over_sentinel_publishes_and_listens_on_the_primary(topology):
    got: List[tuple] = []
    health: List[tuple] = []
    node = RedisNode(topology.url + "?sentinel_timeout=0.3", server_name="n1",
                     on_message=lambda node, channel, raw: got.append((channel, raw)),
                     on_health_change=lambda node, kind, healthy, event, error: health.append((kind, healthy, event)),
                     on_subscription_error=lambda *args: None, ping_interval=0.2, ping_timeout=0.5,
                     recovery_grace=0.0, probe_channel="csbp:probe:n1:x")
    try:
        node.start(["a"])
        wait_for(lambda: node.publisher_healthy and node.subscriber_healthy, timeout=10)
        assert node.label == "sentinel:mymaster" and node.host == "sentinel:mymaster"
        assert node.port == ",".join("127.0.0.1:%d" % s.port for s in topology.sentinels)
        assert describe_config(topology.url) == (node.host, node.port, 0)
        assert node.wanted_channels == {"a"}  # the probe channel is the node's own business
        assert node.publish("a", b"hello") == 1
        wait_for(lambda: got == [("a", b"hello")])
        # the probe goes round (publisher -> own subscriber) and never reaches on_message
        wait_for(lambda: node.probe_latency > 0, timeout=5, message="a probe round trip")
        assert node.probe_misses == 0 and got == [("a", b"hello")]
        assert "mymaster" in repr(node)
    finally:
        node.close()
