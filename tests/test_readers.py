"""crossws_sync.io.readers: read steps on reusable worker greenlets, started from the hub.

Steps that do not block share one worker; a blocked step never holds up the others; workers
beyond ``max_idle`` end; a step that raises is logged and its worker goes on."""
import logging

import gevent
import gevent.event
import pytest

from crossws_sync.io.readers import ReaderPool, reader_pool
from support import wait_for


def from_hub(pool, step, arg):
    """Run the step as a watcher callback would: from the event loop."""
    gevent.get_hub().loop.run_callback(pool.run, step, arg)


@pytest.mark.timeout(10)
def test_steps_that_do_not_block_share_one_worker_which_is_not_the_hub():
    pool = ReaderPool(gevent.get_hub())
    ran = []
    for index in range(5):
        from_hub(pool, lambda i: ran.append((i, gevent.getcurrent())), index)
    wait_for(lambda: len(ran) == 5)
    assert [i for i, _ in ran] == list(range(5))
    workers = {g for _, g in ran}
    assert len(workers) == 1 and gevent.get_hub() not in workers
    assert pool.started == 1 and pool.idle == 1


@pytest.mark.timeout(10)
def test_a_blocked_step_does_not_hold_up_the_others():
    pool = ReaderPool(gevent.get_hub())
    release = gevent.event.Event()
    done = []

    def blocking(name):
        release.wait(5)
        done.append(name)

    from_hub(pool, blocking, "slow")
    from_hub(pool, done.append, "fast")
    wait_for(lambda: done == ["fast"])
    release.set()
    wait_for(lambda: done == ["fast", "slow"])
    assert pool.started == 2 and pool.idle == 2


@pytest.mark.timeout(10)
def test_workers_beyond_max_idle_end_when_their_step_is_done():
    pool = ReaderPool(gevent.get_hub(), max_idle=1)
    release = gevent.event.Event()
    for _ in range(3):
        from_hub(pool, lambda _: release.wait(5), None)
    wait_for(lambda: pool.started == 3)
    release.set()
    gevent.sleep(0.05)
    assert pool.idle == 1


@pytest.mark.timeout(10)
def test_a_step_that_raises_is_logged_and_its_worker_goes_on(caplog):
    pool = ReaderPool(gevent.get_hub())
    done = []

    def broken(_):
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="crossws_sync.readers"):
        from_hub(pool, broken, None)
        from_hub(pool, done.append, "next")
        wait_for(lambda: done == ["next"])
    assert "boom" in caplog.text and pool.started == 1


def test_one_pool_per_hub():
    assert reader_pool() is reader_pool()
