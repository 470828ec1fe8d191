"""crossws_sync.client.session: reconnect scheduling, manual close, the offline queue (calls while
connecting) and the dispatch of what connections report; no server (a closed port, fake connections)."""
import gevent
import gevent.event
import pytest

from crossws_sync.client.acks import (
    CALLBACK_TIMEOUT,
    OFFLINE_QUEUE_DROPPED,
    OFFLINE_QUEUE_FULL,
    WS_NOT_OPEN,
    PendingAck,
)
from crossws_sync.client.options import client_options
from crossws_sync.client.session import MANUAL_CLOSE_CODE, Session
from crossws_sync.wire.websocket import CONNECTING, OPEN
from support import free_port, wait_for
from test_client_options import DEFAULTS

pytestmark = pytest.mark.timeout(30)


def make(**changes):
    session = Session(client_options("ws://127.0.0.1:%d" % free_port(), **{**DEFAULTS, "ping_msg": "hb", **changes}))
    fired = []
    for name in ("open", "close", "error", "reconnect", "repeat-limit", "message", "pong"):
        session.lifecycle.on(name, lambda *a, name=name: fired.append((name,) + a))
    return session, fired


class FakeConn:
    def __init__(self):
        self.state = OPEN
        self.detached = False
        self.pending = {}
        self.sent = []

    def send(self, data):
        self.sent.append(data)
        return True


def names(fired):
    return [f[0] for f in fired]


def test_a_failed_attempt_fires_error_then_schedules_a_reconnect():
    # The original's schedule: the first delay is at least 0.2 s (a full-jitter one may be ~0, and
    # the attempt would run before the assertions below).
    session, fired = make(fast_reconnect_interval=0.2, reconnect_jitter="original")
    session.open_connection()
    wait_for(lambda: "reconnect" in names(fired))
    assert names(fired)[:2] == ["error", "reconnect"]
    reconnect = fired[1][1]
    assert reconnect.repeat == 1 and reconnect.timeout > 0 and session.repeat == 1
    assert session.opening() and session.reconnect() == "skipped"  # one is already scheduled
    wait_for(lambda: names(fired).count("reconnect") == 2)  # the attempt ran, failed, and rescheduled
    session.manual_close()
    assert not session.opening() and session.reconnect() == "skipped"


def test_repeat_limit_ends_with_close_1006():
    session, fired = make(repeat_limit=0)
    session.open_connection()
    wait_for(lambda: "close" in names(fired))
    assert names(fired) == ["error", "repeat-limit", "close"]
    assert fired[1][1] == 0 and fired[2][1].code == 1006 and fired[2][1].was_clean is False
    assert session.reconnect() == "limit"


def test_manual_close_while_connecting_is_silent_and_final():
    session, fired = make()
    session.open_connection()
    session.manual_close()
    session.manual_close()  # idempotent
    gevent.sleep(0.1)
    assert fired == [] and session.conn is None and not session.opening()


def test_connect_resets_repeat_and_reopens():
    session, fired = make(fast_reconnect_interval=10)
    session.open_connection()
    wait_for(lambda: session.repeat == 1)
    session.connect()
    assert session.repeat == 0 and session.conn is not None


def promise_ack(callback_id):
    return PendingAck(callback_id, None, gevent.event.AsyncResult())


def test_send_fails_at_once_when_nothing_is_coming():
    session, _ = make()
    ack, calls = promise_ack("p1"), []
    assert session.send(b"frame", ack, None, (1.0, 0.1)) is False
    assert ack.result.ready() and ack.result.get().error_code == WS_NOT_OPEN
    assert session.send(b"frame", PendingAck("c1", lambda *a: calls.append(a), None), None, (1.0, 0.1)) is False
    assert [c[0].error_code for c in calls] == [WS_NOT_OPEN]  # called before send returned
    assert session.send(b"frame", None, None, (1.0, 0.1)) is False and session.offline == {}


def test_send_while_connecting_queues_with_its_deadline_counted_from_the_call():
    session, fired = make(fast_reconnect_interval=10, callback_timeout=0.15)
    session.open_connection()  # a closed port: fails, then the next attempt waits 10 s
    ack = promise_ack("p1")
    assert session.send(b"request", ack, None, (0.1, 0.05)) is False
    assert session.send(b"note", None, None, (5.0, 0.1)) is False  # fire-and-forget: the client's 0.15
    assert list(session.offline) == ["p1", "queued-1"] and not ack.result.ready()
    wait_for(lambda: "reconnect" in names(fired))  # still queued across the failed attempt
    assert ack.result.get(timeout=2).error_code == CALLBACK_TIMEOUT
    wait_for(lambda: session.offline == {})  # the fire-and-forget emit expired too
    session.manual_close()


def test_send_when_open_is_sent_and_registered():
    session, _ = make()
    conn = session.conn = FakeConn()
    ack = promise_ack("p1")
    assert session.send(b"frame", ack, None, (1.0, 0.1)) is True
    assert conn.sent == [b"frame"] and "p1" in conn.pending
    session.conn_text(conn, '{"payload": 5, "callbackId": "p1"}')
    assert ack.result.get(timeout=1).data == 5


def test_open_sends_the_queue_in_call_order_before_anything_sent_after_it():
    session, fired = make()
    conn = session.conn = FakeConn()
    conn.state = CONNECTING
    acks = [promise_ack("p%d" % n) for n in range(3)]
    session.send(b"0", acks[0], None, (1.0, 0.1))
    session.send(b"1", None, None, (1.0, 0.1))
    session.send(b"2", acks[2], None, (1.0, 0.1))
    assert conn.sent == [] and len(session.offline) == 3
    conn.state = OPEN
    session.conn_open(conn)
    assert session.send(b"after", None, None, (1.0, 0.1)) is False  # queued behind the flush
    wait_for(lambda: len(conn.sent) == 4)
    assert conn.sent == [b"0", b"1", b"2", b"after"] and session.offline == {}
    assert set(conn.pending) == {"p0", "p2"}  # the acks now wait on the connection
    assert session.send(b"direct", None, None, (1.0, 0.1)) is True and conn.sent[-1] == b"direct"
    session.conn_text(conn, '{"payload": "ok", "callbackId": "p2"}')
    assert acks[2].result.get(timeout=1).data == "ok"
    session.heartbeat.stop()


def test_a_full_queue_fails_the_new_call():
    session, _ = make(offline_queue_size=1)
    session.conn = FakeConn()
    session.conn.state = CONNECTING
    first, second = promise_ack("p1"), promise_ack("p2")
    session.send(b"1", first, None, (1.0, 0.1))
    session.send(b"2", second, None, (1.0, 0.1))
    assert second.result.get(timeout=0).error_code == OFFLINE_QUEUE_FULL and not first.result.ready()
    assert session.send(b"3", None, None, (1.0, 0.1)) is False and list(session.offline) == ["p1"]


def test_size_zero_is_the_old_ws_not_open():
    session, _ = make(offline_queue_size=0)
    session.conn = FakeConn()
    session.conn.state = CONNECTING
    ack = promise_ack("p1")
    session.send(b"1", ack, None, (1.0, 0.1))
    assert ack.result.get(timeout=0).error_code == WS_NOT_OPEN and session.offline == {}


def test_the_queue_is_dropped_when_no_attempt_will_come():
    session, fired = make(repeat_limit=0)
    session.open_connection()
    ack = promise_ack("p1")
    session.send(b"1", ack, None, (5.0, 0.1))
    assert session.offline
    result = ack.result.get(timeout=2)
    assert result.error_code == OFFLINE_QUEUE_DROPPED and "repeat limit" in result.error
    assert names(fired) == ["error", "repeat-limit", "close"] and session.offline == {}


def test_manual_close_drops_the_queue():
    session, _ = make(fast_reconnect_interval=10)
    session.open_connection()
    ack = promise_ack("p1")
    session.send(b"1", ack, None, (5.0, 0.1))
    session.manual_close()
    assert ack.result.get(timeout=0).error_code == OFFLINE_QUEUE_DROPPED and session.offline == {}


def test_texts_are_acks_server_events_or_heartbeat_echoes():
    session, fired = make()
    conn = session.conn = FakeConn()
    pushed = []
    session.server_events.on("news", pushed.append)
    session.server_events.on("open", pushed.append)  # a server event named like a lifecycle event
    session.conn_text(conn, '{"event": "news", "payload": {"a": 1}}')
    session.conn_text(conn, '{"event": "open"}')
    session.conn_text(conn, "not json")
    session.conn_binary(conn, b'{"event": "news", "payload": 2}')  # UTF-8 binary: also text
    session.conn_binary(conn, b"\xff")
    wait_for(lambda: len(pushed) == 3)
    assert pushed == [{"a": 1}, None, 2]
    assert [f[1] for f in fired if f[0] == "message"] == [
        '{"event": "news", "payload": {"a": 1}}', '{"event": "open"}', "not json",
        b'{"event": "news", "payload": 2}', b"\xff"]
    assert "open" not in names(fired)


def test_a_detached_connection_is_ignored():
    session, fired = make()
    conn = FakeConn()
    conn.detached = True
    session.conn_open(conn)
    session.conn_text(conn, '{"event": "x"}')
    session.conn_closed(conn, 1000, "", True, None)
    session.conn_failed(conn, OSError("x"))
    gevent.sleep(0.05)
    assert fired == [] and not session.opened.is_set()


def test_open_then_close_from_the_server():
    session, fired = make(auto_reconnect=True, no_reconnect_codes=(4010,))
    conn = session.conn = FakeConn()
    session.conn_open(conn)
    assert session.opened.is_set()
    session.conn_closed(conn, 4010, "bye", True, None)
    wait_for(lambda: "close" in names(fired))
    gevent.sleep(0.05)
    assert names(fired) == ["open", "close"]  # 4010 is a no-reconnect code
    assert fired[1][1].code == 4010 and not session.opened.is_set()
    session.heartbeat.stop()


def test_manual_close_of_an_open_connection_fires_close_4001():
    session, fired = make()
    conn = session.conn = FakeConn()
    conn.start_close = lambda code, reason: conn.sent.append((code, reason))
    conn.pending["c1"] = PendingAck("c1", None, gevent.event.AsyncResult())
    session.manual_close()
    wait_for(lambda: fired)
    assert conn.detached and conn.sent == [(MANUAL_CLOSE_CODE, "client manual close")]
    assert fired[0][0] == "close" and fired[0][1].code == 4001 and fired[0][1].was_clean is True
    assert conn.pending == {}


def test_repeat_reset_counts_attempts_from_zero_again():
    session, fired = make(fast_reconnect_interval=0.02, repeat_limit=1)
    session.open_connection()
    wait_for(lambda: "close" in names(fired))
    assert names(fired) == ["error", "reconnect", "error", "repeat-limit", "close"]
    assert session.reconnect() == "limit" and session.repeat == 1
    assert session.reconnect(repeat_reset=True) == "scheduled" and session.repeat == 1
    wait_for(lambda: names(fired).count("reconnect") == 2)
    assert [f[1].repeat for f in fired if f[0] == "reconnect"] == [1, 1]
    session.manual_close()
