"""crossws_sync.client.session: reconnect scheduling, manual close, requests while connecting and
the dispatch of what connections report; no server (a closed port, fake connections)."""
import gevent
import gevent.event
import pytest

from crossws_sync.client.acks import WS_NOT_OPEN, PendingAck
from crossws_sync.client.options import client_options
from crossws_sync.client.session import MANUAL_CLOSE_CODE, Session
from crossws_sync.wire.websocket import OPEN
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
    session, fired = make(fast_reconnect_interval=0.05)
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


def test_request_fails_at_once_when_nothing_is_coming():
    session, _ = make()
    promise = gevent.event.AsyncResult()
    session.request(PendingAck("p1", None, promise), b"frame", None, (1.0, 0.1))
    assert promise.ready() and promise.get().error_code == WS_NOT_OPEN


def test_request_while_connecting_waits_up_to_connect_timeout():
    session, _ = make(connect_timeout=0.1, fast_reconnect_interval=10)
    session.open_connection()
    promise = gevent.event.AsyncResult()
    session.request(PendingAck("p1", None, promise), b"frame", None, (1.0, 0.1))
    assert not promise.ready()
    assert promise.get(timeout=2).error_code == WS_NOT_OPEN
    session.manual_close()


def test_request_when_open_is_sent_and_registered():
    session, _ = make()
    conn = session.conn = FakeConn()
    promise = gevent.event.AsyncResult()
    session.request(PendingAck("p1", None, promise), b"frame", None, (1.0, 0.1))
    assert conn.sent == [b"frame"] and "p1" in conn.pending
    session.conn_text(conn, '{"payload": 5, "callbackId": "p1"}')
    assert promise.get(timeout=1).data == 5


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
