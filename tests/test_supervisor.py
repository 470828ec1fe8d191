"""crossws_sync.io.supervisor: a crashing loop is logged and restarted after its backoff, until
it returns, ``stopped()`` is true or the greenlet is killed."""
import logging
import time

import gevent
import pytest

from crossws_sync.io.supervisor import supervise

logger = logging.getLogger("test_supervisor")


def test_a_loop_that_raises_is_restarted_after_the_backoff_and_logged(caplog):
    starts = []

    def loop():
        starts.append(time.monotonic())
        if len(starts) < 3:
            raise RuntimeError("boom %d" % len(starts))

    with caplog.at_level(logging.ERROR, logger="test_supervisor"):
        gevent.spawn(supervise, loop, "test loop", logger, backoff=0.1).join(timeout=5)
    assert len(starts) == 3
    assert all(later - earlier >= 0.09 for earlier, later in zip(starts, starts[1:]))
    crashes = [r for r in caplog.records if "test loop crashed" in r.getMessage()]
    assert len(crashes) == 2 and crashes[0].exc_info[1].args == ("boom 1",)


def test_stops_restarting_once_stopped_is_true():
    starts = []

    def loop():
        starts.append(1)
        raise RuntimeError("always")

    worker = gevent.spawn(supervise, loop, "doomed", logger, stopped=lambda: len(starts) >= 2, backoff=0.01)
    worker.join(timeout=5)
    assert worker.dead and worker.successful() and len(starts) == 2


def test_never_starts_when_already_stopped():
    ran = []
    supervise(lambda: ran.append(1), "never", logger, stopped=lambda: True)
    assert ran == []


def test_a_loop_that_returns_is_not_restarted():
    ran = []
    supervise(lambda: ran.append(1), "once", logger)
    assert ran == [1]


def test_kill_ends_it_even_during_the_backoff():
    def loop():
        raise RuntimeError("crash")

    worker = gevent.spawn(supervise, loop, "killed", logger, backoff=30)
    gevent.sleep(0.05)  # now in the 30 s pause
    worker.kill(timeout=2)
    assert worker.dead and isinstance(worker.value, gevent.GreenletExit)


def test_base_exceptions_are_not_swallowed():
    def loop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        supervise(loop, "interrupted", logger)
