"""Dispatcher: calls run in order on reusable worker greenlets; a blocked call holds up nobody."""
import logging

import gevent
import gevent.event
import pytest

from crossws_sync.io.dispatch import Dispatcher


def test_calls_run_in_submission_order_on_one_reused_worker():
    dispatcher = Dispatcher(100)
    seen = []
    for index in range(1000):
        dispatcher.submit(seen.append, index)
    gevent.sleep(0.05)
    assert seen == list(range(1000))
    # A greenlet per call (gevent.pool.Pool.spawn) would have made 100 (the limit).
    assert dispatcher.workers == 1
    for index in range(10):  # the parked worker is reused for the next burst
        dispatcher.submit(seen.append, index)
    gevent.sleep(0.05)
    assert seen[-10:] == list(range(10)) and dispatcher.workers == 1
    dispatcher.close()


def test_a_blocked_call_does_not_hold_up_the_calls_behind_it():
    dispatcher = Dispatcher(10)
    release = gevent.event.Event()
    done = []

    def slow():
        release.wait(5)
        done.append("slow")

    dispatcher.submit(slow)
    for index in range(3):
        dispatcher.submit(done.append, index)
    gevent.sleep(0.05)
    assert done == [0, 1, 2]  # they ran while "slow" was blocked
    release.set()
    gevent.sleep(0.05)
    assert done == [0, 1, 2, "slow"]
    dispatcher.close()


def test_calls_queued_behind_a_worker_that_blocks_later_still_run():
    dispatcher = Dispatcher(10)
    release = gevent.event.Event()
    done = []

    def second_blocks():
        done.append("first")
        dispatcher.submit(done.append, "queued by a call")  # submitted from inside a worker
        release.wait(5)
        done.append("released")

    dispatcher.submit(second_blocks)
    gevent.sleep(0.05)
    assert done == ["first", "queued by a call"]
    release.set()
    gevent.sleep(0.05)
    assert done[-1] == "released"
    dispatcher.close()


def test_at_most_limit_calls_run_at_once_and_an_outside_submitter_waits_for_room():
    dispatcher = Dispatcher(3)
    release = gevent.event.Event()
    running = []
    peak = [0]

    def blocked(index):
        running.append(index)
        peak[0] = max(peak[0], len(running))
        release.wait(5)
        running.remove(index)

    submitted = []

    def producer():
        for index in range(8):
            dispatcher.submit(blocked, index)
            submitted.append(index)

    greenlet = gevent.spawn(producer)
    gevent.sleep(0.1)
    assert peak[0] == 3 and dispatcher.workers == 3
    # 3 running + 3 queued: the producer waits with the seventh call.
    assert submitted == [0, 1, 2, 3, 4, 5] and len(dispatcher) == 3
    release.set()
    greenlet.join(5)
    gevent.sleep(0.1)
    assert submitted == list(range(8)) and running == [] and peak[0] == 3
    dispatcher.close()


def test_a_raising_call_is_logged_and_the_worker_goes_on(caplog):
    dispatcher = Dispatcher(5, "test dispatch")
    seen = []

    def boom():
        raise RuntimeError("handler bug")

    with caplog.at_level(logging.ERROR, logger="crossws_sync.dispatch"):
        dispatcher.submit(boom)
        dispatcher.submit(seen.append, "after")
        gevent.sleep(0.05)
    assert seen == ["after"] and dispatcher.workers == 1
    assert any("handler bug" in (record.exc_text or "") or "test dispatch" in record.getMessage()
               for record in caplog.records)
    dispatcher.close()


def test_hub_callbacks_never_wait_for_room():
    dispatcher = Dispatcher(1)
    release = gevent.event.Event()
    seen = []
    dispatcher.submit(release.wait, 5)  # the only worker blocks
    gevent.sleep(0.01)
    for index in range(5):  # from loop callbacks (as the bus's timers do): queue, never block the hub
        gevent.get_hub().loop.run_callback(dispatcher.submit, seen.append, index)
    gevent.sleep(0.05)
    assert len(dispatcher) == 5 and seen == []
    release.set()
    gevent.sleep(0.05)
    assert seen == [0, 1, 2, 3, 4]
    dispatcher.close()


def test_close_kills_blocked_workers_and_drops_queued_calls():
    dispatcher = Dispatcher(1)
    finished = []

    def blocked():
        gevent.sleep(10)
        finished.append("blocked")

    dispatcher.submit(blocked)
    dispatcher.submit(finished.append, "queued")
    gevent.sleep(0.02)
    dispatcher.close()
    assert dispatcher.workers == 0 and len(dispatcher) == 0
    gevent.sleep(0.05)
    assert finished == []
    dispatcher.submit(finished.append, "after close")
    gevent.sleep(0.02)
    assert finished == []


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        Dispatcher(0)
