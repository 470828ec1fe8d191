"""crossws_sync.bus.health: the health check of one node. The liveness probe against a subscriber
made deaf for real (a real redis-server behind a TCP proxy), and the check's decisions with fakes."""
import time

import gevent
import pytest

from crossws_sync.bus.health import HealthCheck
from crossws_sync.bus.node import RedisNode
from crossws_sync.bus.subscriber import Deaf, Stalled
from crossws_sync.errors import RedisUnavailableError
from support import wait_for


def up(node):
    return node.publisher_healthy and node.subscriber_healthy


# The check's decisions, with fakes ----------------------------------------------------------------

class FakeSubscriber:
    def __init__(self):
        self.ping_sent_at = None
        self.subscribed = set()

    def is_subscribed(self, channel):
        return channel in self.subscribed


class FakeNode:
    """What a HealthCheck sees of its node: commands, flags and flips, the listener."""

    def __init__(self, replies):
        self.replies = replies  # command name -> reply or exception
        self.sent = []
        self.flips = []
        self.publisher_healthy = self.subscriber_healthy = True
        self.subscriber = FakeSubscriber()
        self.listener = gevent.spawn(gevent.sleep, 30)
        self.conflicts = []

    def command(self, *args, timeout=None):
        self.sent.append(args)
        reply = self.replies[args[0]]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def check(self, **options):
        options.setdefault("ping_interval", 0.2)
        options.setdefault("ping_timeout", 0.5)
        options.setdefault("force_ping", True)
        return HealthCheck(label="fake", command=self.command, subscriber=self.subscriber,
                           listener=lambda: self.listener, publisher_up=lambda: self.publisher_healthy,
                           subscriber_up=lambda: self.subscriber_healthy,
                           set_publisher=lambda *flip: self.flips.append(("publisher",) + flip),
                           set_subscriber=lambda *flip: self.flips.append(("subscriber",) + flip),
                           stopped=lambda: False, on_name_conflict=self.conflicts.append, **options)


def test_a_ping_reports_connect_then_ping_and_a_failure_reports_down():
    node = FakeNode({"PING": b"PONG"})
    check = node.check()
    check.step()
    check.step()
    assert node.flips == [("publisher", True, "connect", None), ("publisher", True, "ping", None)]
    assert check.pinged.is_set() and check.publisher_seen
    node.replies["PING"] = RedisUnavailableError("gone")
    check.step()
    assert node.flips[-1] == ("publisher", False, "ping", "gone")
    node.listener.kill()


def test_a_stalled_subscriber_read_kills_the_listener():
    node = FakeNode({"PING": b"PONG"})
    node.subscriber.ping_sent_at = time.monotonic() - 2.0
    node.check().step()
    gevent.sleep(0)
    assert node.listener.dead and isinstance(node.listener.exception, Stalled)


def test_the_name_check_runs_once_after_the_first_subscription():
    node = FakeNode({"PING": b"PONG", "PUBSUB": [b"csbp:name", 2]})
    check = node.check(name_check_channel="csbp:name")
    check.step()
    assert not [args for args in node.sent if args[0] == "PUBSUB"]
    check.subscriber_ready()
    check.step()
    check.subscriber_ready()
    check.step()
    assert [args for args in node.sent if args[0] == "PUBSUB"] == [("PUBSUB", "NUMSUB", "csbp:name")]
    assert node.conflicts == [2]
    node.listener.kill()


def test_a_probe_that_reaches_no_subscriber_marks_the_subscriber_deaf():
    node = FakeNode({"PING": b"PONG", "PUBLISH": 0})
    node.subscriber.subscribed.add("probe")
    check = node.check(probe_channel="probe")
    check.step()
    gevent.sleep(0)
    assert check.probe_misses == 1 and check.probe_sent_at is None
    assert node.flips[-1][:3] == ("subscriber", False, "probe")
    assert node.listener.dead and isinstance(node.listener.exception, Deaf)


def test_a_probe_that_comes_back_measures_its_round_trip():
    node = FakeNode({"PING": b"PONG", "PUBLISH": 1})
    node.subscriber.subscribed.add("probe")
    check = node.check(probe_channel="probe")
    check.step()
    assert check.probe_sent_at is not None
    check.probe_received(b"other")
    assert check.probe_sent_at is not None
    check.probe_received(b"1")
    assert check.probe_sent_at is None and check.probe_latency > 0 and check.probe_misses == 0
    check.step()  # not due yet: nothing sent
    assert [args[0] for args in node.sent].count("PUBLISH") == 1
    node.listener.kill()


# The probe against a real deaf subscriber -------------------------------------------------------

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
        wait_for(lambda: node.probe_latency > 0 and node._health.probe_sent_at is None, timeout=3)
        from faultkit import record
        record("probe_deaf_subscriber", ping_interval_s=0.2, ping_timeout_s=0.5,
               detect_s=round(detected - made_deaf, 3), healed_after_detect_s=round(healed - detected, 3))
    finally:
        node.close()
        proxy.close()
