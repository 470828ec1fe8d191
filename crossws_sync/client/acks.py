"""Pending acks of the client: timeouts, ``on_pending``, settling each exactly once.

An ack settles with the server's reply or with a :class:`~crossws_sync.results.Result` whose
``error_code`` is one of the codes below. Entries live in a dict per connection (a reply can
only come on the connection its request went out on).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import gevent
import gevent.event

from ..config import positive_number
from ..results import Result
from .queue import EventQueue, call_user

WS_NOT_OPEN = "WS_NOT_OPEN"
CALLBACK_TIMEOUT = "CALLBACK_TIMEOUT"
CONNECTION_CLOSED = "CONNECTION_CLOSED"
INVALID_ARGUMENT = "INVALID_ARGUMENT"

#: The pending acks of one connection, by callback id.
Pending = Dict[str, "PendingAck"]


class PendingAck:
    """One request waiting for its reply: a ``callback(err, data)`` or a promise (``result``)."""

    __slots__ = ("callback_id", "callback", "result", "timeout_timer", "pending_timer", "done")

    def __init__(self, callback_id: str, callback: Optional[Callable[..., Any]],
                 result: Optional[gevent.event.AsyncResult]) -> None:
        self.callback_id = callback_id
        self.callback = callback
        self.result = result
        self.timeout_timer: Any = None  # gevent loop timers: no greenlet per pending ack
        self.pending_timer: Any = None
        self.done = False


class Acks:
    """Settles the pending acks of a client's connections.

    Promises are resolved directly, so a listener blocked in ``emit_and_wait`` is woken even
    while the event greenlet is busy; callbacks and ``on_pending`` run on the event greenlet.

    Args:
        queue: the client's event greenlet.
        callback_timeout: default ack timeout, in seconds.
        pending_timeout: default delay before ``on_pending``, in seconds.
    """

    def __init__(self, queue: EventQueue, callback_timeout: float, pending_timeout: float) -> None:
        self._events = queue
        self._callback_timeout = callback_timeout
        self._pending_timeout = pending_timeout

    def timeouts(self, callback_timeout: Optional[float], on_pending: Optional[Callable[[], Any]],
                 pending_timeout: Optional[float]) -> Tuple[float, float]:
        """Check the ack options of one request; return ``(ack timeout, pending timeout)``
        (``None``: the client's default).

        Raises:
            TypeError: ``on_pending`` is not callable.
            ConfigError: a timeout is not a positive finite number.
        """
        if on_pending is not None and not callable(on_pending):
            raise TypeError("on_pending must be a function")
        ack_timeout = (self._callback_timeout if callback_timeout is None
                       else positive_number("callback_timeout", callback_timeout, finite=True))
        pending = (self._pending_timeout if pending_timeout is None
                   else positive_number("pending_timeout", pending_timeout, finite=True))
        return ack_timeout, pending

    def register(self, pending: Pending, entry: PendingAck, on_pending: Optional[Callable[[], Any]],
                 ack_timeout: float, pending_timeout: float) -> None:
        """Wait for ``entry``'s reply in ``pending``: it fails with ``CALLBACK_TIMEOUT`` after
        ``ack_timeout``; ``on_pending()`` runs once after ``pending_timeout`` if no reply came
        yet (only when ``pending_timeout < ack_timeout``)."""
        pending[entry.callback_id] = entry
        # Loop timers run their callback in the hub: _timed_out only resolves or posts (never
        # blocks), and on_pending is posted to the event greenlet.
        loop = gevent.get_hub().loop
        entry.timeout_timer = loop.timer(ack_timeout)
        entry.timeout_timer.start(self._timed_out, pending, entry)
        if on_pending is not None and pending_timeout < ack_timeout:
            entry.pending_timer = loop.timer(pending_timeout)
            entry.pending_timer.start(self._events.post, self._run_pending, entry, on_pending)

    def resolve(self, pending: Pending, callback_id: str, payload: Any) -> None:
        """Settle the ack ``callback_id`` with ``payload``; unknown or late ids are ignored."""
        entry = pending.pop(callback_id, None)
        if entry is not None:
            self._settle(entry, None, payload)

    def fail_all(self, pending: Pending) -> None:
        """Fail every ack of ``pending`` with ``CONNECTION_CLOSED`` (its connection is gone)."""
        entries = list(pending.values())
        pending.clear()
        for entry in entries:
            self._settle(entry, Result(error="Connection closed before the reply: " + entry.callback_id,
                                       error_code=CONNECTION_CLOSED), None)

    def _timed_out(self, pending: Pending, entry: PendingAck) -> None:
        if pending.pop(entry.callback_id, None) is None:
            return
        prefix = "Is promise callback timeout: " if entry.result is not None else "Is callback timeout: "
        self._settle(entry, Result(error=prefix + entry.callback_id, error_code=CALLBACK_TIMEOUT), None)

    @staticmethod
    def _run_pending(entry: PendingAck, on_pending: Callable[[], Any]) -> None:
        if not entry.done:  # never after the reply
            call_user(on_pending)

    def _settle(self, entry: PendingAck, error: Optional[Result], payload: Any) -> None:
        if entry.done:
            return
        entry.done = True
        for timer in (entry.timeout_timer, entry.pending_timer):
            if timer is not None:
                timer.close()
        entry.timeout_timer = entry.pending_timer = None
        if entry.result is not None:
            if error is None:
                entry.result.set(Result(success=True, data=payload))
            else:
                entry.result.set(Result(success=False, error=error.error, error_code=error.error_code))
        elif entry.callback is not None:
            self._events.post(call_user, entry.callback, error, None if error is not None else payload)
