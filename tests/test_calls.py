"""PendingCalls: every call ends exactly once, in the shape of its mode (callback or promise)."""
import gevent
from gevent.event import AsyncResult

from crossws_sync.bus.calls import PendingCalls


def make():
    stats = {"replies": 0, "late_replies": 0}
    ran = []

    def run_user(function, args, inline):
        ran.append(inline)
        function(*args)

    return PendingCalls(run_user, stats), stats, ran


def reply(callback_id, server, payload):
    return {"callbackId": callback_id, "senderServer": server, "payload": payload}


def test_promise_resolves_once_with_every_reply_and_later_replies_are_late():
    calls, stats, _ = make()
    promise = AsyncResult()
    calls.add("c1", None, promise, 2, [], timeout=5)
    calls.reply(reply("c1", "A", 1), inline=True)
    assert not promise.ready() and len(calls) == 1
    calls.reply(reply("c1", "B", 2), inline=True)
    result = promise.get(timeout=1)
    assert result.success and set(result.responses) == {"A", "B"} and len(calls) == 0
    calls.reply(reply("c1", "C", 3), inline=True)
    assert stats == {"replies": 2, "late_replies": 1}
    assert calls.completed == 1 and calls.completed_seconds > 0 and calls.timeouts == 0


def test_callback_runs_per_reply_then_once_on_timeout_naming_the_silent_servers():
    calls, _, ran = make()
    results = []
    calls.add("c2", results.append, None, 3, ["A", "B", "C"], timeout=0.05)
    calls.reply(reply("c2", "A", "a"), inline=False)
    gevent.sleep(0.15)
    assert [r.success for r in results] == [True, False]
    assert results[0].remaining_responses == 2
    assert results[1].error == "Cross-server callback timed out." and results[1].unresponded_servers == ["B", "C"]
    assert ran == [False, False]  # the reply as asked, the timeout (a loop timer) never inline
    gevent.sleep(0.1)
    assert len(results) == 2 and len(calls) == 0
    assert calls.timeouts == 1 and calls.completed == 0


def test_fail_delete_and_close_end_a_call_only_once():
    calls, _, _ = make()
    first, second, third = AsyncResult(), AsyncResult(), AsyncResult()
    one = calls.add("f", None, first, 1, [], timeout=0.05)
    calls.add("d", None, second, 1, [], timeout=0.05)
    calls.add("x", None, third, 1, [], timeout=0.05)
    calls.fail(one, "No healthy Redis node available", error_code="REDIS_UNAVAILABLE")
    calls.fail(one, "again")  # already ended: nothing happens
    assert first.get(timeout=1).error_code == "REDIS_UNAVAILABLE"
    assert calls.delete("d") is True and calls.delete("d") is False
    assert second.get(timeout=1).message == "Cross-server callback deleted."
    calls.close()
    assert third.get(timeout=1).error_code == "BUS_CLOSED"
    gevent.sleep(0.1)  # no timer fires after the end
    assert len(calls) == 0 and list(calls) == []
