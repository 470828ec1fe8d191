"""crossws_sync.bus.nodes: a RedisNodeSet over real redis-servers: channels on every node, the
selection strategy with failover, membership changes and the user's health hook."""
import pytest

from crossws_sync import Result
from crossws_sync.bus.nodes import UNAVAILABLE_MESSAGE, RedisNodeSet
from crossws_sync.errors import ConfigError, RedisUnavailableError
from bus_fixtures import Spy
from support import wait_for

HEALTH_KEYS = {"host", "port", "server_name", "event", "is_healthy", "error", "healthy_subscriber_count",
               "healthy_publisher_count", "total_node_count", "type"}


@pytest.fixture
def make_set():
    made = []

    def make(servers, strategy="round-robin", channels=("c",)):
        log = {"messages": [], "health": []}
        stats = {"published": 0, "publish_failovers": 0, "publish_failures": 0}
        nodes = RedisNodeSet(
            server_name="s1", on_message=lambda node, channel, raw: log["messages"].append((node.port, channel, raw)),
            stats=stats, selection_strategy=strategy, name_check_channel="s1-node",
            on_name_conflict=lambda node, count: None,
            on_health_change=lambda healthy, info: log["health"].append((healthy, info)),
            on_subscription_error=None, ping_interval=0.2, ping_timeout=0.5, force_ping=True, connect_timeout=1.0)
        nodes.start([s.config for s in servers], channels)
        nodes.log, nodes.counts = log, stats
        made.append(nodes)
        assert nodes.wait_healthy(10)
        return nodes

    yield make
    for nodes in made:
        nodes.close()


def test_channels_are_subscribed_on_every_node_and_round_robin_spreads_publishes(make_set, redis_factory):
    servers = [redis_factory(), redis_factory()]
    nodes = make_set(servers)
    assert nodes.subscribe("d", timeout=5) is True
    spies = [Spy(s.port, "d") for s in servers]
    for n in range(4):
        nodes.publish("d", b"m%d" % n)
    wait_for(lambda: len(nodes.log["messages"]) == 4)
    assert sorted(len(spy.on("d")) for spy in spies) == [2, 2]
    assert sorted(raw for _, _, raw in nodes.log["messages"]) == [b"m0", b"m1", b"m2", b"m3"]
    assert nodes.counts["published"] == 4 and nodes.channels == {"c", "d"}
    nodes.unsubscribe("d")
    wait_for(lambda: not any(node.is_subscribed("d") for node in nodes.nodes))
    for spy in spies:
        spy.close()


def test_a_dead_node_is_failed_over_and_reported_once_then_nothing_is_left(make_set, redis_factory):
    servers = [redis_factory(), redis_factory()]
    nodes = make_set(servers, strategy="random")
    assert nodes.healthy_count("publisher") == 2 and nodes.healthy and nodes.settled
    servers[0].kill()
    wait_for(lambda: nodes.healthy_count("publisher") == 1 and nodes.healthy_count("subscriber") == 1, timeout=10)
    for n in range(5):
        nodes.publish("c", b"x%d" % n)  # always reaches the live node
    wait_for(lambda: len(nodes.log["messages"]) == 5)
    downs = [info for healthy, info in nodes.log["health"] if not healthy]
    assert sorted(info.type for info in downs) == ["publisher", "subscriber"]
    assert all(isinstance(info, Result) and set(info) == HEALTH_KEYS for info in downs)
    assert {info.port for info in downs} == {servers[0].port} and downs[-1].total_node_count == 2
    servers[1].kill()
    wait_for(lambda: not nodes.healthy, timeout=10)
    with pytest.raises(RedisUnavailableError, match=UNAVAILABLE_MESSAGE):
        nodes.publish("c", b"lost")
    with pytest.raises(RedisUnavailableError):
        nodes.publish_nowait("c", b"lost")
    assert nodes.counts["publish_failures"] >= 1
    with pytest.raises(TypeError):
        nodes.healthy_count("both")


def test_nodes_added_and_removed_at_run_time(make_set, redis_factory):
    first, second = redis_factory(), redis_factory()
    nodes = make_set([first])
    with pytest.raises(ConfigError):
        nodes.add(first.config)
    nodes.add(second.config)
    assert len(nodes) == 2
    wait_for(lambda: all(node.is_subscribed("c") for node in nodes.nodes), timeout=10)  # joins with every channel
    spy = Spy(second.port, "c")
    assert nodes.remove({"host": "127.0.0.1", "port": 1}) is False and nodes.remove(5) is False
    removed = nodes.nodes[0]
    assert nodes.remove(first.config, drain=0.5) is True
    assert removed.retiring and not removed.eligible and not removed.closed  # still listening while it drains
    assert [node.port for node in nodes.nodes] == [second.port]
    wait_for(lambda: nodes.settled, timeout=5)  # past the joining node's recovery grace
    nodes.publish("c", b"via second")
    wait_for(lambda: spy.on("c") == [b"via second"])
    wait_for(lambda: removed.closed, timeout=5)  # stops listening after its drain
    spy.close()
