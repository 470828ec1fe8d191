"""Greenlets for readable sockets, on demand: a connection with nothing to read holds none.

A greenlet parked in a read costs memory for as long as its connection lives: the slice of the
C stack that greenlet copies to the heap when it switches out (about 2.9 KiB per connection
measured by ``bench/memory_breakdown.py``), its own frame stack on CPython 3.11+ (a 16 KiB
mapping, a page or more of it resident), and the ``Greenlet`` with the spawning stack gevent
records for it (about 1.3 KiB). For idle connections that was most of what each one cost.

With a :class:`ReaderPool` a connection waits with its read watcher armed and nothing else.
When the socket becomes readable, the watcher's callback (in the hub) hands the connection's
read step to a parked worker greenlet and switches to it at once, as the hub switches to a
greenlet blocked in ``recv``. The step reads, dispatches (user handlers may block: the worker
blocks with them, the others go on) and re-arms the watcher; the worker parks again. Steps that
do not block all run on the same worker; blocked ones make the pool start more, and the
workers beyond ``max_idle`` parked ones end when their step is done.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List

import gevent
from greenlet import greenlet as _RawGreenlet

logger = logging.getLogger("crossws_sync.readers")

Step = Callable[[Any], None]


class ReaderPool:
    """Reusable worker greenlets for read steps, started and resumed from the hub.

    Args:
        hub: the gevent hub whose event loop calls :meth:`run` (from watcher callbacks).
        max_idle: parked workers kept for the next steps; one more ends instead of parking.

    Attributes:
        started: workers started so far (a step found no parked worker).
    """

    __slots__ = ("_hub", "_idle", "max_idle", "started")

    def __init__(self, hub: Any, max_idle: int = 64) -> None:
        self._hub = hub
        self._idle: List[Any] = []
        self.max_idle = max_idle
        self.started = 0

    @property
    def idle(self) -> int:
        """Workers parked now."""
        return len(self._idle)

    def run(self, step: Step, arg: Any) -> None:
        """Run ``step(arg)`` on a worker greenlet, now. Only from the hub (a loop or watcher
        callback): the worker runs until it parks or blocks, then the hub goes on."""
        idle = self._idle
        if idle:
            idle.pop().switch(step, arg)
        else:
            self.started += 1
            # A plain greenlet whose parent is the hub: no spawning stack, no links; it never
            # lets an Exception out (see _work), so nothing reaches the hub from it.
            _RawGreenlet(self._work, self._hub).switch(step, arg)

    def _work(self, step: Step, arg: Any) -> None:
        idle = self._idle
        hub = self._hub
        me = gevent.getcurrent()
        while True:
            try:
                step(arg)
            except (Exception, gevent.Timeout):  # a step cleans up after itself; keep the worker
                logger.exception("read step %r raised", step)
            del step, arg  # parked workers hold no connection
            if len(idle) >= self.max_idle:
                return
            idle.append(me)
            step, arg = hub.switch()  # parked until run() switches back to us


_pools: Dict[Any, ReaderPool] = {}


def reader_pool() -> ReaderPool:
    """The pool of the current thread's hub (created on first use)."""
    hub = gevent.get_hub()
    pool = _pools.get(hub)
    if pool is None:
        if len(_pools) > 16:  # hubs of finished threads (tests): do not keep them alive
            for old in [h for h in _pools if getattr(h, "dead", False)]:
                del _pools[old]
        pool = _pools[hub] = ReaderPool(hub)
    return pool


__all__ = ["ReaderPool", "reader_pool"]
