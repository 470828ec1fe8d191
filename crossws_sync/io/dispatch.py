"""Run calls on a bounded set of long-lived worker greenlets.

The bus hands every received request, reply callback and custom-channel message to user code
that may block. A fresh greenlet per message (``gevent.pool.Pool.spawn``) costs more than the
message itself: besides the Greenlet object, CPython 3.11+ gives every new greenlet its own
frame stack, a 16 KiB ``mmap`` on its first call and a ``munmap`` when it dies. A
:class:`Dispatcher` keeps its worker greenlets: a worker drains the queue call after call and
parks when it is empty, so a burst of 30 requests read from Redis in one ``recv()`` costs one
greenlet switch, not 30 spawns.

A call that blocks (I/O, a lock, ``gevent.sleep``) must not hold up the calls queued behind it:
whenever a worker takes a call and more are waiting, a check is scheduled on the event loop.
Loop callbacks run only while no worker runs, so if that check finds calls waiting and no
worker about to resume, the worker that took the call is blocked: another worker is woken, or
started while fewer than ``limit`` exist. Calls start in submission order.

Backpressure: an outside greenlet (a Redis listener) that submits while ``limit`` calls are
already queued waits until the queue has room, as ``Pool.spawn`` did. Workers and the hub
(loop timers) never wait: they may be the ones the queue is waiting for.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Deque, List, Set, Tuple

import gevent
from gevent.event import Event

logger = logging.getLogger("crossws_sync.dispatch")

Job = Tuple[Callable[..., Any], Tuple[Any, ...]]


class Dispatcher:
    """A FIFO of calls run by at most ``limit`` reusable worker greenlets.

    Args:
        limit: most calls running (or blocked) at once; also the queue length at which an
            outside submitter waits.
        name: for log messages.
    """

    def __init__(self, limit: int, name: str = "dispatcher") -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.name = name
        self._jobs: Deque[Job] = deque()
        self._idle: List[gevent.Greenlet] = []
        self._workers: Set[gevent.Greenlet] = set()
        self._woken = 0  # workers scheduled to resume that have not run yet
        self._check_scheduled = False
        self._room = Event()
        self._room.set()
        self._closed = False
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop

    def __len__(self) -> int:
        """Calls waiting for a worker."""
        return len(self._jobs)

    @property
    def workers(self) -> int:
        """Worker greenlets alive (busy, blocked or parked)."""
        return len(self._workers)

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)``. An exception it raises is logged, never propagated.

        Waits (outside greenlets only) while ``limit`` calls are queued.
        """
        if self._closed:
            return
        current = gevent.getcurrent()
        if len(self._jobs) >= self.limit and current not in self._workers and current is not self._hub:
            self._room.clear()
            self._room.wait()
            if self._closed:
                return
        self._jobs.append((function, args))
        if self._woken:
            return
        if current in self._workers:
            self._schedule_check()  # this worker drains it next, unless it blocks first
        else:
            self._wake_one()

    def close(self) -> None:
        """Drop queued calls and kill every worker except the calling one (waits up to 5 s)."""
        self._closed = True
        self._jobs.clear()
        self._room.set()
        current = gevent.getcurrent()
        gevent.killall([worker for worker in list(self._workers) if worker is not current], block=True, timeout=5)

    # Internals ----------------------------------------------------------------------------

    def _wake_one(self) -> None:
        if self._idle:
            worker = self._idle.pop()
            self._woken += 1
            self._loop.run_callback(worker.switch)
        elif len(self._workers) < self.limit:
            self._woken += 1
            worker = gevent.Greenlet(self._work)
            self._workers.add(worker)
            worker.start()

    def _schedule_check(self) -> None:
        if not self._check_scheduled:
            self._check_scheduled = True
            self._loop.run_callback(self._check)

    def _check(self) -> None:
        # A loop callback: no worker is running now, so queued calls with nobody about to resume
        # mean the workers that took the previous calls are blocked.
        self._check_scheduled = False
        if self._jobs and not self._woken and not self._closed:
            self._wake_one()

    def _work(self) -> None:
        current = gevent.getcurrent()
        hub = self._hub
        jobs = self._jobs
        self._woken -= 1
        try:
            while not self._closed:
                while jobs:
                    function, args = jobs.popleft()
                    if jobs:
                        self._schedule_check()
                    if not self._room.is_set() and len(jobs) < self.limit:
                        self._room.set()
                    try:
                        function(*args)
                    except Exception:  # user code: log, keep the worker
                        logger.exception("%s: %r raised", self.name, function)
                    del function, args
                self._idle.append(current)
                hub.switch()  # parked until _wake_one switches back to us
                self._woken -= 1
        finally:
            self._workers.discard(current)
            if current in self._idle:
                self._idle.remove(current)
