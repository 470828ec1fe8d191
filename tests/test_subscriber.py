"""crossws_sync.bus.subscriber: the subscriber connection of a node on a real redis-server:
the wanted set subscribed on every connection, messages in order, tickets that say when a
SUBSCRIBE is confirmed or refused, and reconnection after the link is cut."""
import time

import gevent
import pytest
import redis

from crossws_sync.bus.connection import RedisConnection, RedisSettings
from crossws_sync.bus.subscriber import Subscriber
from support import wait_for


@pytest.fixture
def make_subscriber():
    made = []

    def make(server, force_ping=True):
        log = {"messages": [], "ready": 0, "down": [], "refused": []}
        settings = RedisSettings(host="127.0.0.1", port=server.port, connect_timeout=2.0, timeout=2.0)
        state = {"closed": False, "healthy": False}

        def connect():
            return RedisConnection.open(settings)

        def ready():
            log["ready"] += 1
            state["healthy"] = True

        def down(event, error):
            log["down"].append(event)
            state["healthy"] = False

        subscriber = Subscriber(
            connect, label="test", on_message=lambda channel, raw: log["messages"].append((channel, raw)),
            on_ready=ready, on_down=down, on_attempt=lambda: None,
            on_subscription_error=lambda channel, event, error: log["refused"].append((channel, event, error)),
            is_healthy=lambda: state["healthy"], closed=lambda: state["closed"],
            ping_interval=0.2, ping_timeout=1.0, force_ping=force_ping)
        subscriber.log = log
        listener = gevent.spawn(subscriber.run)
        made.append((subscriber, listener, state))
        return subscriber

    yield make
    for subscriber, listener, state in made:
        state["closed"] = True
        listener.kill()
        subscriber.disconnect()


def test_the_wanted_set_is_subscribed_and_messages_arrive_in_order(make_subscriber, redis_server):
    publisher = redis.Redis(host="127.0.0.1", port=redis_server.port)
    sub = make_subscriber(redis_server)
    sub.want(["a", "b"])  # before the first connection (the listener is only starting)
    wait_for(lambda: sub.is_subscribed("a") and sub.is_subscribed("b"))
    assert sub.log["ready"] == 1
    for n in range(50):
        publisher.publish("a" if n % 2 else "b", b"%d" % n)
    publisher.publish("elsewhere", b"x")
    wait_for(lambda: len(sub.log["messages"]) == 50)
    assert [int(raw) for _, raw in sub.log["messages"]] == list(range(50))
    ticket = sub.request_subscribe(["c"])
    assert sub.wait_ticket(ticket, ["c"], time.monotonic() + 5) == {"c": "ok"}
    sub.unsubscribe(["a"])
    wait_for(lambda: publisher.pubsub_numsub("a")[0][1] == 0)
    assert sub.wanted_channels == {"b", "c"}
    publisher.close()


def test_a_cut_link_is_reported_and_the_whole_set_is_subscribed_again(make_subscriber, redis_server):
    publisher = redis.Redis(host="127.0.0.1", port=redis_server.port)
    sub = make_subscriber(redis_server)
    ticket = sub.request_subscribe(["a", "b"])
    wait_for(lambda: sub.is_subscribed("a") and sub.is_subscribed("b"))
    assert publisher.client_kill_filter(_type="pubsub") == 1
    wait_for(lambda: "close" in sub.log["down"])
    wait_for(lambda: sub.is_subscribed("a") and sub.is_subscribed("b") and sub.log["ready"] == 2)
    publisher.publish("b", b"after")
    wait_for(lambda: sub.log["messages"] == [("b", b"after")])
    publisher.close()


def test_a_refused_channel_fails_alone_and_is_reported(make_subscriber, redis_factory):
    server = redis_factory(extra_args=["--user", "default", "on", "nopass", "~*", "resetchannels", "&ok*", "+@all"])
    sub = make_subscriber(server)
    wait_for(lambda: sub.log["ready"] == 1)
    ticket = sub.request_subscribe(["ok1", "secret", "ok2"])
    statuses = sub.wait_ticket(ticket, ["ok1", "secret", "ok2"], time.monotonic() + 5)
    assert statuses["ok1"] == statuses["ok2"] == "ok"
    assert statuses["secret"].startswith("failed: ") and "NOPERM" in statuses["secret"].upper()
    assert [(channel, event) for channel, event, _ in sub.log["refused"]] == [("secret", "subscribe")]
    assert sub.wanted_channels == {"ok1", "ok2"}
