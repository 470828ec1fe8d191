"""crossws_sync.bus.node: one RedisNode on a real redis-server: messages on wanted channels,
publishes, health reported once per flip, resubscription after a restart, the recovery grace."""
import time

import gevent
import pytest
import redis

from crossws_sync.bus.node import RedisNode, describe_config, is_auth_error, make_client
from crossws_sync.errors import ConfigError, RedisUnavailableError
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


def test_configs_urls_and_their_errors():
    assert describe_config({"host": "10.0.0.1", "port": 6380, "db": 2}) == ("10.0.0.1", 6380, 2)
    assert describe_config("redis://:pw@example.com:6390/3") == ("example.com", 6390, 3)
    client = make_client({"host": "h", "tls": True}, connect_timeout=1.0, command_timeout=2.0)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 2.0 and kwargs["socket_connect_timeout"] == 1.0
    assert "ssl" in client.connection_pool.connection_class.__name__.lower()
    for bad in ("http://h:1", 6379, {"hots": "h"}, {"host": "h", "tls": {"ca": "x"}}):
        with pytest.raises(ConfigError):
            make_client(bad, connect_timeout=1.0, command_timeout=1.0)


def test_auth_errors_are_recognised():
    assert is_auth_error("WRONGPASS invalid username-password pair or user is disabled.")
    assert is_auth_error("NOAUTH Authentication required.")
    assert not is_auth_error("Connection refused") and not is_auth_error(None)


# The liveness probe -----------------------------------------------------------------------------

def _deaf_setup(redis_factory, probe_channel):
    """A node reaching Redis through a TCP proxy, then made deaf for real: the proxy is pointed at
    another Redis and the publisher's connection is killed (``CLIENT KILL TYPE normal``), so the
    publisher reconnects to the new server while the subscriber stays on the old one, answering
    PINGs but hearing none of the publishes (an address that moved, a demoted primary)."""
    from faultkit import TcpBalancer

    old, new = redis_factory(), redis_factory()
    proxy = TcpBalancer([old.port])
    log = {"messages": [], "health": []}
    node = RedisNode({"host": "127.0.0.1", "port": proxy.port}, server_name="n1",
                     on_message=lambda node, channel, raw: log["messages"].append((channel, raw)),
                     on_health_change=lambda node, kind, healthy, event, error: log["health"].append(
                         (time.monotonic(), kind, healthy, event)),
                     on_subscription_error=lambda *args: None, ping_interval=0.2, ping_timeout=0.5,
                     recovery_grace=0.0, probe_channel=probe_channel)
    node.start(["a"])
    wait_for(lambda: up(node), timeout=5)
    assert node.publish("a", b"before") == 1
    wait_for(lambda: log["messages"] == [("a", b"before")])
    proxy.backends = [new.port]
    old.command("CLIENT", "KILL", "TYPE", "normal")  # the publisher's connection, not the subscriber's
    made_deaf = time.monotonic()

    def on_new_server() -> bool:
        try:
            # the publisher is on the new server, where nobody listens (or the probe saw it already)
            return node.publish("a", b"lost") == 0 or node.probe_misses > 0
        except RedisUnavailableError:
            return False

    wait_for(on_new_server, timeout=5, message="the publisher to reconnect to the new server")
    return node, proxy, log, made_deaf, old, new


@pytest.mark.timeout(30)
def test_without_the_probe_a_deaf_subscriber_stays_green_and_loses_everything(redis_factory):
    """The control: the fault injected by _deaf_setup is real, and PINGs alone do not see it."""
    node, proxy, log, made_deaf, old, new = _deaf_setup(redis_factory, None)
    try:
        gevent.sleep(1.5)  # several PING periods
        assert node.subscriber_healthy and [h for h in log["health"] if h[0] > made_deaf and h[1] == "subscriber"] == []
        assert ("a", b"lost") not in log["messages"]
    finally:
        node.close()
        proxy.close()


@pytest.mark.timeout(30)
def test_the_probe_reports_a_deaf_subscriber_and_it_heals_on_the_right_server(redis_factory):
    node, proxy, log, made_deaf, old, new = _deaf_setup(redis_factory, "csbp:probe:n1:test")
    try:
        wait_for(lambda: any(h[1:] == ("subscriber", False, "probe") for h in log["health"] if h[0] > made_deaf),
                 timeout=5, message="the probe to report the deaf subscriber")
        detected = min(h[0] for h in log["health"] if h[1:] == ("subscriber", False, "probe"))
        wait_for(lambda: node.subscriber_healthy, timeout=5, message="the subscriber to come back")
        healed = min(h[0] for h in log["health"] if h[0] > detected and h[1:3] == ("subscriber", True))
        assert node.probe_misses >= 1
        # it heals on the server the publishes go to: messages arrive again, on every wanted channel
        assert node.publish("a", b"after") == 1
        wait_for(lambda: ("a", b"after") in log["messages"])
        wait_for(lambda: node.probe_latency > 0 and node._probe_sent_at is None, timeout=3)
        from faultkit import record
        record("probe_deaf_subscriber", ping_interval_s=0.2, ping_timeout_s=0.5,
               detect_s=round(detected - made_deaf, 3), healed_after_detect_s=round(healed - detected, 3))
    finally:
        node.close()
        proxy.close()
