"""The client's event greenlet: all user code of a client runs here, in order.

Listeners, ack callbacks and ``on_pending`` never run in a connection's reading greenlet, so
they may block (even in ``emit_and_wait``) without stalling the heartbeat or the acks.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Deque, Optional, Tuple

import gevent

logger = logging.getLogger("crossws_sync.client")


def call_user(fn: Callable[..., Any], *args: Any) -> None:
    """Call user code; an exception is logged on ``crossws_sync.client``, never raised."""
    try:
        fn(*args)
    except Exception:  # user code: log, never break the client
        logger.exception("client callback %r raised", fn)


class EventQueue:
    """Runs queued calls in order on one greenlet, started on demand and gone when idle.

    A call that raises is logged and the next one runs.
    """

    def __init__(self) -> None:
        self._queue: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = deque()
        self._greenlet: Optional[gevent.Greenlet] = None

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; it runs after every call queued before it."""
        self._queue.append((fn, args))
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    @property
    def idle(self) -> bool:
        """Whether nothing is queued or running."""
        return self._greenlet is None

    def _run(self) -> None:
        queue = self._queue
        try:
            while queue:
                fn, args = queue.popleft()
                try:
                    fn(*args)
                except Exception:
                    logger.exception("client event handler failed")
        finally:
            self._greenlet = None
