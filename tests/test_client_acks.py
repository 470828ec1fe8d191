"""crossws_sync.client.acks: pending acks settle exactly once (reply, timeout, closed connection),
``on_pending`` fires once when the reply is slow; small intervals, no server."""
import time

import gevent
import gevent.event
import pytest

from crossws_sync.client.acks import CALLBACK_TIMEOUT, CONNECTION_CLOSED, OFFLINE_QUEUE_DROPPED, Acks, PendingAck
from crossws_sync.client.queue import EventQueue
from crossws_sync.errors import ConfigError
from support import wait_for

pytestmark = pytest.mark.timeout(30)


def make():
    return Acks(EventQueue(), callback_timeout=5.0, pending_timeout=0.1)


class Calls:
    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append((args, gevent.getcurrent()))

    @property
    def args(self):
        return [a for a, _ in self.calls]


def test_reply_calls_the_callback_once_on_the_event_greenlet():
    acks, pending, callback = make(), {}, Calls()
    acks.register(pending, PendingAck("c1", callback, None), None, 0.2, 0.1)
    acks.resolve(pending, "c1", {"ok": 1})
    assert pending == {} and callback.calls == []  # posted, not run by the reader
    wait_for(lambda: callback.calls)
    assert callback.args == [(None, {"ok": 1})] and callback.calls[0][1] is not gevent.getcurrent()
    gevent.sleep(0.3)  # the timeout timer was closed: no second call
    acks.resolve(pending, "c1", "late")  # unknown or late ids are ignored
    gevent.sleep(0.01)
    assert len(callback.calls) == 1


def test_reply_resolves_a_promise_directly():
    acks, pending, promise = make(), {}, gevent.event.AsyncResult()
    acks.register(pending, PendingAck("p1", None, promise), None, 1.0, 0.1)
    acks.resolve(pending, "p1", [1, 2])
    assert promise.ready()  # no event greenlet in between
    result = promise.get()
    assert result.success is True and result.data == [1, 2]


def test_timeout_fails_callback_and_promise_with_their_messages():
    acks, pending, callback, promise = make(), {}, Calls(), gevent.event.AsyncResult()
    acks.register(pending, PendingAck("c1", callback, None), None, 0.05, 1.0)
    acks.register(pending, PendingAck("p1", None, promise), None, 0.05, 1.0)
    result = promise.get(timeout=2)
    assert result.success is False and result.error_code == CALLBACK_TIMEOUT
    assert result.error == "Is promise callback timeout: p1"
    wait_for(lambda: callback.calls)
    err, data = callback.args[0]
    assert err.error == "Is callback timeout: c1" and err.error_code == CALLBACK_TIMEOUT and data is None
    assert pending == {}
    acks.resolve(pending, "c1", "late")
    gevent.sleep(0.01)
    assert len(callback.calls) == 1


def test_on_pending_fires_once_when_the_reply_is_slow():
    acks, pending, slow = make(), {}, Calls()
    acks.register(pending, PendingAck("c1", Calls(), None), slow, 0.3, 0.05)
    wait_for(lambda: slow.calls)
    acks.resolve(pending, "c1", 1)
    gevent.sleep(0.1)
    assert slow.args == [()]


def test_on_pending_never_after_the_reply_nor_when_not_shorter_than_the_timeout():
    acks, pending, slow = make(), {}, Calls()
    acks.register(pending, PendingAck("c1", Calls(), None), slow, 0.3, 0.05)
    acks.resolve(pending, "c1", 1)
    acks.register(pending, PendingAck("c2", Calls(), None), slow, 0.05, 0.05)  # pending == timeout
    gevent.sleep(0.15)
    assert slow.calls == []


def test_fail_all_fails_every_entry_with_connection_closed_once():
    acks, pending, callback, promise = make(), {}, Calls(), gevent.event.AsyncResult()
    acks.register(pending, PendingAck("c1", callback, None), None, 0.05, 1.0)
    acks.register(pending, PendingAck("p1", None, promise), None, 0.05, 1.0)
    acks.fail_all(pending)
    assert pending == {}
    result = promise.get(timeout=1)
    assert result.error_code == CONNECTION_CLOSED and result.error == "Connection closed before the reply: p1"
    gevent.sleep(0.15)  # timers closed: no CALLBACK_TIMEOUT afterwards
    assert [err.error_code for err, _ in callback.args] == [CONNECTION_CLOSED]


def test_move_keeps_the_deadline_counted_from_the_register():
    acks, queued, conn_pending, promise = make(), {}, {}, gevent.event.AsyncResult()
    acks.register(queued, PendingAck("p1", None, promise), None, 0.2, 1.0)
    started = time.monotonic()
    gevent.sleep(0.1)
    acks.move(queued["p1"], conn_pending)
    assert queued == {} and list(conn_pending) == ["p1"]
    assert promise.get(timeout=1).error_code == CALLBACK_TIMEOUT and conn_pending == {}
    assert 0.15 < time.monotonic() - started < 0.3  # one deadline, not restarted by the move


def test_discard_stops_a_queued_fire_and_forget_without_settling():
    acks, queued, callback = make(), {}, Calls()
    entry = PendingAck("queued-1", None, None, b"frame")
    acks.register(queued, entry, None, 0.05, 1.0)
    assert not entry.wants_reply
    acks.discard(entry)
    assert queued == {} and entry.done and entry.timeout_timer is None


def test_fail_all_with_a_code_fails_requests_and_drops_fire_and_forget_entries():
    acks, queued, callback, promise = make(), {}, Calls(), gevent.event.AsyncResult()
    acks.register(queued, PendingAck("c1", callback, None), None, 1.0, 1.0)
    acks.register(queued, PendingAck("queued-1", None, None), None, 1.0, 1.0)
    acks.register(queued, PendingAck("p1", None, promise), None, 1.0, 1.0)
    acks.fail_all(queued, OFFLINE_QUEUE_DROPPED, "Not sent: ")
    assert queued == {} and promise.get(timeout=1).error == "Not sent: p1"
    wait_for(lambda: callback.args)
    assert [(err.error_code, err.error) for err, _ in callback.args] == [(OFFLINE_QUEUE_DROPPED, "Not sent: c1")]


def test_a_raising_callback_does_not_break_the_others():
    acks, pending, callback = make(), {}, Calls()
    acks.register(pending, PendingAck("c1", lambda e, d: 1 / 0, None), None, 1.0, 1.0)
    acks.register(pending, PendingAck("c2", callback, None), None, 1.0, 1.0)
    acks.resolve(pending, "c1", 1)
    acks.resolve(pending, "c2", 2)
    wait_for(lambda: callback.args == [(None, 2)])


def test_timeouts_defaults_and_checks():
    acks = make()
    assert acks.timeouts(None, None, None) == (5.0, 0.1)
    assert acks.timeouts(2, None, 1) == (2.0, 1.0)
    for bad in (0, -1, float("inf"), float("nan"), "1", True):
        with pytest.raises(ConfigError, match="^callback_timeout "):
            acks.timeouts(bad, None, None)
        with pytest.raises(ConfigError, match="^pending_timeout "):
            acks.timeouts(None, None, bad)
    with pytest.raises(TypeError, match="on_pending must be a function"):
        acks.timeouts(None, "nope", None)
