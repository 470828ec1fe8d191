"""crossws_sync.bus.node: one RedisNode on a real redis-server: messages on wanted channels,
publishes, health reported once per flip, resubscription after a restart, the recovery grace.
The liveness probe is tested in tests/test_health.py, the config helpers in tests/test_settings.py."""
import time

import gevent
import pytest
import redis

from crossws_sync.bus.node import RedisNode
from crossws_sync.errors import RedisUnavailableError
from support import wait_for


@pytest.fixture
def make_node():
    made = []

    def make(server, **options):
        log = {"messages": [], "health": [], "sub_errors": []}
        options.setdefault("ping_interval", 0.2)
        options.setdefault("ping_timeout", 0.5)
        options.setdefault("recovery_grace", 0.0)
        node = RedisNode(
            server.config, server_name="n1",
            on_message=lambda node, channel, raw: log["messages"].append((channel, raw)),
            on_health_change=lambda node, kind, healthy, event, error: log["health"].append((kind, healthy)),
            on_subscription_error=lambda node, channel, event, error: log["sub_errors"].append(channel),
            **options)
        node.log = log
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def up(node):
    return node.publisher_healthy and node.subscriber_healthy


def test_wanted_channels_receive_messages_and_publish_counts_subscribers(make_node, redis_server):
    node = make_node(redis_server)
    node.start(["a"])
    assert node.wait_started(5)
    wait_for(lambda: up(node) and node.is_subscribed("a"))
    assert node.eligible and node.label == "127.0.0.1:%d" % redis_server.port
    other = redis.Redis(host="127.0.0.1", port=redis_server.port)
    assert other.publish("a", b"\x00raw") == 1
    ticket = node.request_subscribe(["b"])
    assert node.wait_ticket(ticket, ["b"], time.monotonic() + 5) == {"b": "ok"}
    assert node.publish("b", b"mine") == 1  # our own subscriber hears it
    other.publish("c", b"not wanted")
    wait_for(lambda: len(node.log["messages"]) == 2)
    gevent.sleep(0.1)
    assert node.log["messages"] == [("a", b"\x00raw"), ("b", b"mine")]
    node.unsubscribe(["a"])
    wait_for(lambda: not node.is_subscribed("a"))
    assert node.wanted_channels == {"b"} and other.publish("a", b"x") == 0
    assert node.command("ECHO", "hi") == b"hi"
    with pytest.raises(redis.ResponseError):
        node.command("NOSUCHCOMMAND")
    assert sorted(node.log["health"]) == [("publisher", True), ("subscriber", True)]  # once per flip
    other.close()


def test_a_restarted_server_is_reported_down_then_up_and_every_channel_is_resubscribed(make_node, redis_server):
    node = make_node(redis_server, recovery_grace=0.5)
    node.start(["a", "b"])
    wait_for(lambda: up(node) and node.is_subscribed("b"))
    redis_server.kill()
    wait_for(lambda: not node.publisher_healthy and not node.subscriber_healthy, timeout=10)
    assert not node.eligible
    with pytest.raises(RedisUnavailableError):
        node.publish("a", b"lost")
    redis_server.start()
    wait_for(lambda: node.publisher_healthy, timeout=15)
    healed = time.monotonic()
    assert not node.eligible  # the recovery grace: peers resubscribe before traffic comes through it
    wait_for(lambda: node.eligible, timeout=5)
    assert time.monotonic() - healed >= 0.4
    wait_for(lambda: up(node) and node.is_subscribed("a") and node.is_subscribed("b"), timeout=15)
    other = redis.Redis(host="127.0.0.1", port=redis_server.port)
    other.publish("b", b"after")
    wait_for(lambda: ("b", b"after") in node.log["messages"])
    assert ("publisher", False) in node.log["health"] and node.log["health"][-2:] in (
        [("publisher", True), ("subscriber", True)], [("subscriber", True), ("publisher", True)])
    other.close()


def test_a_closed_node_refuses_work_and_close_is_idempotent(make_node, redis_server):
    node = make_node(redis_server)
    node.start()
    wait_for(lambda: up(node))
    node.close()
    node.close()
    assert node.closed and not node.publisher_healthy and not node.eligible
    with pytest.raises(RedisUnavailableError):
        node.command("PING")
    with pytest.raises(RedisUnavailableError):
        node.publish_nowait("a", b"x", lambda error: None)
