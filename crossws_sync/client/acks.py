"""Pending acks of the client: timeouts, ``on_pending``, settling each exactly once.

An ack settles with the server's reply or with a :class:`~crossws_sync.results.Result` whose
``error_code`` is one of the codes below. Entries live in a dict per connection (a reply can
only come on the connection its request went out on), or, while they wait in the offline queue
for a connection, in the session's queue dict; :meth:`Acks.move` hands an entry from one dict
to the other without restarting its timers, so its timeout counts from the call.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import logging

import gevent
import gevent.event

from ..config import positive_number
from ..results import Result
from .queue import EventQueue, call_user

logger = logging.getLogger("crossws_sync.client")

WS_NOT_OPEN = "WS_NOT_OPEN"
CALLBACK_TIMEOUT = "CALLBACK_TIMEOUT"
CONNECTION_CLOSED = "CONNECTION_CLOSED"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
#: The offline queue holds ``offline_queue_size`` calls already: this one was not queued.
OFFLINE_QUEUE_FULL = "OFFLINE_QUEUE_FULL"
#: A queued call was never sent: ``manual_close()`` or the end of the reconnect attempts
#: (``repeat_limit``, a no-reconnect close) dropped the offline queue.
OFFLINE_QUEUE_DROPPED = "OFFLINE_QUEUE_DROPPED"

#: The pending acks of one connection, by callback id.
Pending = Dict[str, "PendingAck"]


class PendingAck:
    """One request waiting for its reply: a ``callback(err, data)`` or a promise (``result``).

    In the offline queue an entry also carries its encoded ``frame``; a fire-and-forget emit is
    queued as an entry with neither callback nor result (its timeout only expires it).
    """

    __slots__ = ("callback_id", "callback", "result", "frame", "table", "timeout_timer", "pending_timer", "done")

    def __init__(self, callback_id: str, callback: Optional[Callable[..., Any]],
                 result: Optional[gevent.event.AsyncResult], frame: bytes = b"") -> None:
        self.callback_id = callback_id
        self.callback = callback
        self.result = result
        self.frame = frame
        self.table: Optional[Pending] = None  # the dict it waits in (set by register / move)
        self.timeout_timer: Any = None  # gevent loop timers: no greenlet per pending ack
        self.pending_timer: Any = None
        self.done = False

    @property
    def wants_reply(self) -> bool:
        """Whether someone waits for the reply (a callback or a promise)."""
        return self.callback is not None or self.result is not None


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
        entry.table = pending
        # Loop timers run their callback in the hub: _timed_out only resolves or posts (never
        # blocks), and on_pending is posted to the event greenlet.
        loop = gevent.get_hub().loop
        entry.timeout_timer = loop.timer(ack_timeout)
        entry.timeout_timer.start(self._timed_out, entry)
        if on_pending is not None and pending_timeout < ack_timeout:
            entry.pending_timer = loop.timer(pending_timeout)
            entry.pending_timer.start(self._events.post, self._run_pending, entry, on_pending)

    @staticmethod
    def move(entry: PendingAck, pending: Pending) -> None:
        """Let ``entry`` wait in ``pending`` from now on; its timers keep running (a queued
        request sent on a new connection keeps the deadline counted from its call)."""
        if entry.table is not None:
            entry.table.pop(entry.callback_id, None)
        pending[entry.callback_id] = entry
        entry.table = pending

    def discard(self, entry: PendingAck) -> None:
        """Take ``entry`` out of its dict and stop its timers without settling it (a queued
        fire-and-forget emit that is being sent)."""
        if entry.table is not None:
            entry.table.pop(entry.callback_id, None)
        entry.done = True
        self._stop_timers(entry)

    def resolve(self, pending: Pending, callback_id: str, payload: Any) -> None:
        """Settle the ack ``callback_id`` with ``payload``; unknown or late ids are ignored."""
        entry = pending.pop(callback_id, None)
        if entry is not None:
            self._settle(entry, None, payload)

    def fail_all(self, pending: Pending, error_code: str = CONNECTION_CLOSED,
                 message: str = "Connection closed before the reply: ") -> None:
        """Fail every ack of ``pending`` with ``error_code`` and ``message + callback_id``
        (default: ``CONNECTION_CLOSED``, its connection is gone)."""
        entries = list(pending.values())
        pending.clear()
        for entry in entries:
            if entry.wants_reply:
                self._settle(entry, Result(error=message + entry.callback_id, error_code=error_code), None)
            else:
                entry.done = True
                self._stop_timers(entry)

    def fail(self, entry: PendingAck, error_code: str, error: str) -> None:
        """Settle ``entry`` (never registered) at once with ``error_code``: a callback runs
        in the caller's greenlet, before the call that made it returns; a promise resolves."""
        entry.done = True
        if entry.result is not None:
            entry.result.set(Result(success=False, error=error, error_code=error_code))
        elif entry.callback is not None:
            call_user(entry.callback, Result(error=error, error_code=error_code), None)

    def _timed_out(self, entry: PendingAck) -> None:
        if entry.table is None or entry.table.pop(entry.callback_id, None) is None:
            return
        if not entry.wants_reply:
            logger.debug("queued emit %s expired before a connection opened: never sent", entry.callback_id)
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
        self._stop_timers(entry)
        if entry.result is not None:
            if error is None:
                entry.result.set(Result(success=True, data=payload))
            else:
                entry.result.set(Result(success=False, error=error.error, error_code=error.error_code))
        elif entry.callback is not None:
            self._events.post(call_user, entry.callback, error, None if error is not None else payload)

    @staticmethod
    def _stop_timers(entry: PendingAck) -> None:
        for timer in (entry.timeout_timer, entry.pending_timer):
            if timer is not None:
                timer.close()
        entry.timeout_timer = entry.pending_timer = None
