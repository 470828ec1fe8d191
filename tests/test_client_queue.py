"""crossws_sync.client.queue: the client's event greenlet runs user code in order, alone."""
import logging

import gevent
import pytest

from crossws_sync.client.queue import EventQueue, call_user
from support import wait_for

pytestmark = pytest.mark.timeout(30)


def test_calls_run_in_order_on_one_greenlet_that_ends_when_idle():
    queue = EventQueue()
    seen = []
    for i in range(5):
        queue.post(lambda i=i: seen.append((i, gevent.getcurrent())))
    assert seen == [] and not queue.idle  # posting never runs user code in the caller
    wait_for(lambda: queue.idle)
    assert [i for i, _ in seen] == list(range(5))
    assert len({g for _, g in seen}) == 1 and seen[0][1] is not gevent.getcurrent()


def test_a_call_posted_from_a_call_runs_after_the_queued_ones():
    queue = EventQueue()
    seen = []
    queue.post(lambda: queue.post(seen.append, "inner"))
    queue.post(seen.append, "second")
    wait_for(lambda: queue.idle)
    assert seen == ["second", "inner"]


def test_a_raising_call_is_logged_and_the_next_runs(caplog):
    queue = EventQueue()
    seen = []
    queue.post(lambda: 1 / 0)
    queue.post(seen.append, "after")
    with caplog.at_level(logging.ERROR, logger="crossws_sync.client"):
        wait_for(lambda: queue.idle)
    assert seen == ["after"]
    assert any(r.name == "crossws_sync.client" and r.exc_info for r in caplog.records)


def test_a_blocking_call_delays_only_the_queue():
    queue = EventQueue()
    seen = []
    queue.post(gevent.sleep, 0.05)
    queue.post(seen.append, "late")
    gevent.sleep(0.01)
    assert seen == []  # the caller went on; the queue waits behind the blocking call
    wait_for(lambda: seen == ["late"])


def test_call_user_logs_and_swallows(caplog):
    with caplog.at_level(logging.ERROR, logger="crossws_sync.client"):
        call_user(lambda x: 1 / 0, 1)
    assert "raised" in caplog.text
    seen = []
    call_user(seen.append, 7)
    assert seen == [7]
