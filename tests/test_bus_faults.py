"""Fault injection for the bus with real redis-server processes: kill, restart, hang, client kill,
nodes added and removed under traffic, a crashing listener."""
import logging
import signal
import time

import gevent
import pytest

from bus_fixtures import Spy, collect, make_bus  # noqa: F401 - make_bus is a fixture
from crossws_sync.wire import envelope as env
from crossws_sync.errors import ConfigError
from support import wait_for

FAST = dict(redis_ping_interval=0.3, redis_ping_timeout=0.3)


def responder(bus):
    bus.on_cross_server_event("ask", lambda data, cb: cb({"from": bus.server_name, "n": data["payload"]}))


class Traffic:
    """RPCs from ``sender`` to ``target`` in a loop (bounded in count), recording each outcome."""

    def __init__(self, sender, target, limit=3000, timeout=2.0):
        self.sender, self.target, self.limit, self.timeout = sender, target, limit, timeout
        self.results = []  # (issued_at, success, result)
        self._stop = False
        self._greenlet = gevent.spawn(self._run)

    def _run(self):
        for n in range(self.limit):
            if self._stop:
                return
            issued = time.monotonic()
            result = self.sender.emit_cross_server_and_wait("ask", n, target_server=self.target, timeout=self.timeout)
            self.results.append((issued, result.success, result))
            gevent.sleep(0.005)

    def count_after(self, moment):
        return sum(1 for issued, _, _ in self.results if issued >= moment)

    def failures_after(self, moment):
        return [r for issued, ok, r in self.results if issued >= moment and not ok]

    def stop(self):
        self._stop = True
        self._greenlet.join(timeout=self.timeout + 2)
        self._greenlet.kill()


def node_down(bus, port):
    return any(n.port == port and not n.publisher_healthy and not n.subscriber_healthy for n in bus.redis_nodes)


def node_eligible(bus, port):
    return any(n.port == port and n.eligible for n in bus.redis_nodes)


def test_single_redis_killed_and_restarted(redis_server, make_bus):
    events = []
    a = make_bus("A", [redis_server.config], on_redis_health_change=lambda ok, info: events.append((ok, info.type, info.event)), **FAST)
    b = make_bus("B", [redis_server.config], custom_channels=["side"], **FAST)
    responder(b)
    side, on_side = collect()
    b.set_custom_channel_handler(lambda channel, message: on_side(message))
    assert a.emit_cross_server_and_wait("ask", 1, target_server="B").success
    events.clear()

    redis_server.kill()
    wait_for(lambda: node_down(a, redis_server.port) and node_down(b, redis_server.port), timeout=5)
    assert {(ok, kind) for ok, kind, _ in events} == {(False, "publisher"), (False, "subscriber")}
    assert not a.healthy
    results, callback = collect()
    started = time.monotonic()
    a.emit_cross_server("ask", 2, callback, target_server="B", timeout=5)
    assert [(r.success, r.error_code) for r in results] == [(False, "REDIS_UNAVAILABLE")]  # at once, no timeout
    assert time.monotonic() - started < 1.0
    assert a.publish_redis_message("side", {"lost": True}) is False

    redis_server.start()
    wait_for(lambda: a.wait_healthy(0.1) and b.wait_healthy(0.1), timeout=10)
    assert [(ok, kind) for ok, kind, _ in events[-2:]].count((True, "publisher")) + \
        [(ok, kind) for ok, kind, _ in events[-2:]].count((True, "subscriber")) == 2
    result = a.emit_cross_server_and_wait("ask", 3, target_server="B", timeout=3)
    assert result.success and result.responses["B"]["payload"]["n"] == 3
    assert a.publish_redis_message("side", {"back": True}) is True  # custom channel resubscribed
    wait_for(lambda: side == [{"back": True, "senderServer": "A"}])


def test_subscriber_connections_killed_are_resubscribed(redis_server, make_bus):
    events = {"A": [], "B": []}

    def recorder(name):
        return lambda ok, info: events[name].append((ok, info.type, info.event))

    a = make_bus("A", [redis_server.config], on_redis_health_change=recorder("A"), **FAST)
    b = make_bus("B", [redis_server.config], on_redis_health_change=recorder("B"), **FAST)
    responder(b)
    b.manual_subscribe("late-channel")
    seen, on_seen = collect()
    b.set_custom_channel_handler(lambda channel, message: on_seen(channel))
    events["A"].clear()
    events["B"].clear()
    assert redis_server.command("CLIENT", "KILL", "TYPE", "pubsub").startswith(":2")  # A's and B's subscribers
    expected = [(False, "subscriber", "close"), (True, "subscriber", "ready")]
    wait_for(lambda: events["A"] == expected and events["B"] == expected, timeout=5)
    assert a.emit_cross_server_and_wait("ask", 1, target_server="B", timeout=3).success
    a.publish_redis_message("late-channel", {"x": 1})
    wait_for(lambda: seen == ["late-channel"])


def test_publish_failure_is_retried_on_another_node(redis_factory, make_bus):
    r1, r2 = redis_factory(), redis_factory()
    configs = [r1.config, r2.config]
    a = make_bus("A", configs, selection_strategy="round-robin", redis_ping_interval=30, redis_ping_timeout=1)
    b = make_bus("B", configs, selection_strategy="round-robin", **FAST)
    responder(b)
    r1.kill()
    wait_for(lambda: node_down(a, r1.port) and node_down(b, r1.port), timeout=5)
    # A failure nobody noticed yet: make A believe r1 is still fine (no PING for 30 s).
    stale = a.redis_nodes[0]
    stale.publisher_healthy = stale.subscriber_healthy = True
    results = [a.emit_cross_server_and_wait("ask", n, target_server="B", timeout=2) for n in range(4)]
    assert all(r.success for r in results), results
    assert a.stats["publish_failovers"] >= 1 and a.stats["publish_failures"] == 0
    assert not stale.publisher_healthy  # the failed publish marked it down


def test_one_of_two_redis_killed_no_rpc_lost_once_detected(redis_factory, make_bus):
    r1, r2 = redis_factory(), redis_factory()
    configs = [r1.config, r2.config]
    a = make_bus("A", configs, selection_strategy="round-robin", **FAST)
    b = make_bus("B", configs, selection_strategy="round-robin", **FAST)
    responder(b)
    traffic = Traffic(a, "B")
    try:
        wait_for(lambda: len(traffic.results) >= 30, timeout=10)
        r1.kill()
        wait_for(lambda: node_down(a, r1.port) and node_down(b, r1.port), timeout=5)
        detected = time.monotonic()
        wait_for(lambda: traffic.count_after(detected) >= 40, timeout=10)
        r1.start()
        wait_for(lambda: node_eligible(a, r1.port) and node_eligible(b, r1.port), timeout=10)
        healed = time.monotonic()
        spy = Spy(r1.port, a.bridge_channel)
        try:
            wait_for(lambda: traffic.count_after(healed) >= 40 and spy.messages, timeout=10)  # r1 used again
        finally:
            spy.close()
    finally:
        traffic.stop()
    assert traffic.failures_after(detected) == []
    assert len([1 for _, ok, _ in traffic.results if not ok]) <= 2  # at most what was in flight on r1


def test_hung_redis_is_detected_by_ping_timeout(redis_factory, make_bus):
    r1, r2 = redis_factory(), redis_factory()
    events = []
    a = make_bus("A", [r1.config, r2.config], on_redis_health_change=lambda ok, info: events.append((ok, info)), **FAST)
    b = make_bus("B", [r1.config, r2.config], **FAST)
    responder(b)
    r1.proc.send_signal(signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        wait_for(lambda: node_down(a, r1.port) and node_down(b, r1.port), timeout=6)
        assert time.monotonic() - stopped < 3.0
        down = [info for ok, info in events if not ok]
        assert {info.type for info in down} == {"publisher", "subscriber"}
        assert all(info.port == r1.port and info.event == "ping" and "0.3" in (info.error or "") for info in down), down
        assert down[-1].healthy_publisher_count == 1 and down[-1].total_node_count == 2
        for n in range(5):
            assert a.emit_cross_server_and_wait("ask", n, target_server="B", timeout=2).success
    finally:
        r1.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: node_eligible(a, r1.port) and node_eligible(b, r1.port), timeout=10)


def test_add_and_remove_redis_instance_under_traffic(redis_factory, make_bus):
    r1, r2 = redis_factory(), redis_factory()
    a = make_bus("A", [r1.config], selection_strategy="round-robin", **FAST)
    b = make_bus("B", [r1.url], selection_strategy="round-robin", **FAST)
    responder(b)
    baseline_r1 = r1.command("CLIENT", "LIST").count("id=")
    traffic = Traffic(a, "B")
    spy = Spy(r2.port, a.bridge_channel)
    try:
        wait_for(lambda: len(traffic.results) >= 20, timeout=10)
        a.add_redis_instance(r2.config)
        b.add_redis_instance(r2.url)
        assert a.get_redis_instances_count() == b.get_redis_instances_count() == 2
        wait_for(lambda: len(spy.messages) >= 10, timeout=10)  # r2 carries traffic after the join grace
        assert a.remove_redis_instance(r1.config) is True
        assert b.remove_redis_instance(0) is True
        removed = time.monotonic()
        wait_for(lambda: traffic.count_after(removed) >= 40, timeout=10)
        wait_for(lambda: r1.command("CLIENT", "LIST").count("id=") == baseline_r1 - 4, timeout=5,
                 message="the removed node's connections closed after draining")
    finally:
        traffic.stop()
        spy.close()
    assert [r for _, ok, r in traffic.results if not ok] == []
    assert a.get_redis_instances_count() == 1 and a.redis_nodes[0].port == r2.port
    with pytest.raises(ConfigError, match="already configured"):
        a.add_redis_instance(r2.config)
    with pytest.raises(ConfigError, match="required"):
        a.add_redis_instance({})
    assert a.remove_redis_instance(r1.config) is False and a.remove_redis_instance(5) is False


def test_crashing_listener_is_restarted_and_resubscribes(redis_server, make_bus):
    events = []
    a = make_bus("A", [redis_server.config], **FAST)
    b = make_bus("B", [redis_server.config], on_redis_health_change=lambda ok, info: events.append((ok, info.event)), **FAST)
    responder(b)
    subscriber = b.redis_nodes[0]._subscriber
    original = subscriber._handle
    crashes = []

    def crash_once(reply):
        if not crashes and isinstance(reply, list) and reply[:1] == [b"message"]:
            crashes.append(reply)
            raise RuntimeError("injected listener bug")
        return original(reply)

    subscriber._handle = crash_once
    events.clear()
    a.emit_cross_server("ask", "lost", target_server="B")
    wait_for(lambda: events == [(False, "error"), (True, "ready")], timeout=5)
    assert a.emit_cross_server_and_wait("ask", "after", target_server="B", timeout=3).success


# Losses that nobody saw: per-sender numbers let the receiver count them ----------------------

def numbered_stream(sender, redis_server, received, *, kill_for, count=1500):
    """``sender`` publishes one room message and one direct message (as the WebSocket layer
    does), then ``count`` more of each, paced over about ``kill_for`` seconds while Redis drops
    every subscriber connection every 100 ms. Returns ``count``."""
    stop = []
    # One message each before the kills: a receiver takes the first number it sees from a sender
    # as its baseline (what came before may have been sent before it subscribed).
    sender.publish("ws:chat", env.ws_room("first", "chat", "r1", sender.server_name))
    sender.publish("ws:private_socket", env.ws_unicast("first", "user-b", sender.server_name))

    def killer():
        deadline = time.monotonic() + kill_for
        while time.monotonic() < deadline and not stop:
            redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
            gevent.sleep(0.1)

    wait_for(lambda: all(received.values()), timeout=5, message="the first message of each channel")
    chaos = gevent.spawn(killer) if kill_for else None
    pause = max(kill_for, 1.0) / count
    for n in range(count):
        sender.publish("ws:chat", env.ws_room("room %d" % n, "chat", "r1", sender.server_name))
        sender.publish("ws:private_socket", env.ws_unicast("dm %d" % n, "user-b", sender.server_name))
        gevent.sleep(pause)
    stop.append(True)
    if chaos is not None:
        chaos.join(timeout=kill_for + 5)
    return count


def numsub(redis_server, channel):
    return int(redis_server.command("PUBSUB", "NUMSUB", channel).strip().split("\r\n")[-1].lstrip(":"))


def run_numbered_stream(redis_server, make_bus, kill_for, **options):
    """A sends numbered room and direct messages to B (see :func:`numbered_stream`), then one more
    of each once B is subscribed again, so a loss at the end shows too; returns (sent, delivered)
    over both channels, and B."""
    received = {"ws:chat": 0, "ws:private_socket": 0}

    def on_ws(channel, envelope):
        received[channel] += 1

    a = make_bus("A", [redis_server.config], **FAST, **options)
    b = make_bus("B", [redis_server.config], ws_message_handler=on_ws, initial_channels=list(received), **FAST, **options)
    assert a.wait_healthy(5) and b.wait_healthy(5)
    sent = numbered_stream(a, redis_server, received, kill_for=kill_for, count=1000)
    wait_for(lambda: all(numsub(redis_server, channel) == 1 for channel in received), timeout=10,
             message="B subscribed again")
    before = dict(received)
    a.publish("ws:chat", env.ws_room("last", "chat", "r1", "A"))
    a.publish("ws:private_socket", env.ws_unicast("last", "user-b", "A"))
    wait_for(lambda: all(received[channel] > before[channel] for channel in received), timeout=5)
    return 2 * (sent + 2), sum(received.values()), b


def test_messages_lost_while_subscribers_are_killed_are_counted(redis_server, make_bus):
    sent, delivered, b = run_numbered_stream(redis_server, make_bus, kill_for=2.5)
    assert delivered < sent, "the kills lost nothing: this run shows nothing"
    assert b.missed_message_count == b.stats["messages_missed"] == sent - delivered
    assert b.stats["messages_late"] == 0
    print("sent %d, delivered %d, counted missing %d" % (sent, delivered, b.missed_message_count))


@pytest.mark.parametrize("options", [{}, {"signing_key": b"shared"}, {"redis_codec": "json"}],
                         ids=["msgpack", "signed", "json"])
def test_no_message_is_counted_missing_without_losses(redis_server, make_bus, options):
    sent, delivered, b = run_numbered_stream(redis_server, make_bus, kill_for=0, **options)
    assert delivered == sent and b.missed_message_count == 0 and b.stats["messages_missed"] == 0


def test_redis_restarted_with_another_password_says_authentication_failed_once(redis_factory, make_bus, caplog):
    redis_server = redis_factory(extra_args=["--requirepass", "first-secret"])
    reports = []
    a = make_bus("A", [dict(redis_server.config, password="first-secret")],
                 on_redis_health_change=lambda ok, info: reports.append(info), **FAST)
    assert a.wait_healthy(5)
    redis_server.extra_args = ["--requirepass", "second-secret"]
    with caplog.at_level(logging.WARNING, logger="crossws_sync.nodes"):
        redis_server.restart()

        def auth_lines():
            return [r for r in caplog.records if "authentication failed for redis node" in r.getMessage()]
        wait_for(auth_lines, timeout=10)
        gevent.sleep(1.0)  # several more reconnect attempts by both connections, all refused
        [line] = auth_lines()
    assert line.levelno == logging.ERROR and "127.0.0.1:%d" % redis_server.port in line.getMessage()
    assert "invalid username-password pair" in line.getMessage() and "second-secret" not in caplog.text
    [auth] = [info for info in reports if info.event == "auth_failed"]
    assert auth.is_healthy is False and auth.reason == "auth" and "username-password" in auth.error
    assert a.redis_nodes[0].auth_failed

    redis_server.extra_args = ["--requirepass", "first-secret"]
    redis_server.restart()
    assert a.wait_healthy(10) and not a.redis_nodes[0].auth_failed
    assert reports[-1].is_healthy and "reason" not in reports[-1]
