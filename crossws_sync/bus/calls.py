"""Cross-server calls waiting for their replies.

Every emit that wants replies is a :class:`PendingCall`: its callback id, how many replies it
still expects, the replies so far (by server), one libev timer (no greenlet per call) and how it
ends. In *callback* mode the callback runs once per reply and once more on a timeout; in
*promise* mode the ``AsyncResult`` resolves once, with every reply or with the failure. A call
ends exactly once: all replies, timeout, no Redis node to publish on, deleted, or bus closed.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import gevent
from gevent.event import AsyncResult

from ..results import Result

logger = logging.getLogger("crossws_sync.bus")

TIMEOUT_MESSAGE = "Cross-server callback timed out."
CLOSED_MESSAGE = "Cross-server bus closed."
DELETED_MESSAGE = "Cross-server callback deleted."

ResultCallback = Callable[[Result], Any]
#: ``run_user(function, args, inline)``: call user code now (``inline``) or on a worker.
UserRunner = Callable[[Callable[..., Any], Tuple[Any, ...], bool], None]


class PendingCall:
    """One emit waiting for replies (callback mode or promise mode)."""

    __slots__ = ("callback_id", "callback", "promise", "expected", "targets", "responses", "timer", "started")

    def __init__(self, callback_id: str, callback: Optional[ResultCallback], promise: Optional[AsyncResult],
                 expected: int, targets: List[str]) -> None:
        self.callback_id = callback_id
        self.callback = callback
        self.promise = promise
        self.expected = expected
        self.targets = targets
        self.responses: Dict[str, Dict[str, Any]] = {}
        self.timer: Any = None  # a gevent loop timer (no greenlet per pending call)
        self.started = time.monotonic()

    def failure(self, text: str, **extra: Any) -> Result:
        """The failure result in this call's shape (``error`` for callbacks, ``message`` for promises)."""
        if self.promise is not None:
            result = Result(success=False, message=text)
            result.update(extra)
            result.responses = dict(self.responses)
        else:
            result = Result(success=False, error=text)
            result.update(extra)
            result.callback_id = self.callback_id
        result.unresponded_count = max(self.expected, 0)
        if self.targets:
            result.unresponded_servers = [t for t in dict.fromkeys(self.targets) if t not in self.responses]
        return result

    def stop_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.close()


class PendingCalls:
    """The calls of one bus that still wait for replies.

    Args:
        run_user: how user callbacks are called (inline, or on the bus's workers).
        stats: the bus's counters; ``replies`` and ``late_replies`` are counted here.
    """

    def __init__(self, run_user: UserRunner, stats: Dict[str, int]) -> None:
        self._run_user = run_user
        self.stats = stats
        self._calls: Dict[str, PendingCall] = {}
        self._loop = gevent.get_hub().loop
        #: calls that got every expected reply, the seconds they waited in all, and calls
        #: that timed out (read by the metrics collector)
        self.completed = 0
        self.completed_seconds = 0.0
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[str]:
        """The callback ids of the calls still waiting."""
        return iter(list(self._calls))

    def add(self, callback_id: str, callback: Optional[ResultCallback], promise: Optional[AsyncResult],
            expected: int, targets: List[str], timeout: float) -> PendingCall:
        """Register a call and start its timer."""
        call = PendingCall(callback_id, callback, promise, expected, targets)
        self._calls[callback_id] = call
        timer = call.timer = self._loop.timer(timeout)
        timer.start(self._expire, callback_id)
        return call

    def reply(self, data: Dict[str, Any], *, inline: bool) -> None:
        """One reply envelope's ``data`` arrived (``callbackId``, ``senderServer``, ``payload``)."""
        call = self._calls.get(data["callbackId"])
        if call is None:
            self.stats["late_replies"] += 1
            logger.debug("reply %s from %s ignored: no pending call", data["callbackId"], data.get("senderServer"))
            return
        self.stats["replies"] += 1
        call.expected -= 1
        call.responses[data["senderServer"]] = data
        done = call.expected <= 0
        if done:
            del self._calls[call.callback_id]
            call.stop_timer()
            self.completed += 1
            self.completed_seconds += time.monotonic() - call.started
        if call.promise is not None:
            if done:
                call.promise.set(Result(success=True, responses=dict(call.responses)))
        elif call.callback is not None:
            result = Result(success=True, data=data, remaining_responses=max(call.expected, 0))
            self._run_user(call.callback, (result,), inline)

    def fail(self, call: Optional[PendingCall], text: str, *, inline: bool = False, **extra: Any) -> None:
        """End ``call`` with a failure now, unless it has already ended."""
        if call is not None and self._calls.get(call.callback_id) is call:
            del self._calls[call.callback_id]
            call.stop_timer()
            self._finish(call, call.failure(text, **extra), inline=inline)

    def delete(self, callback_id: str) -> bool:
        """Forget a call: later replies are ignored; a waiting promise resolves as deleted."""
        call = self._calls.pop(callback_id, None)
        if call is None:
            return False
        call.stop_timer()
        if call.promise is not None:
            call.promise.set(call.failure(DELETED_MESSAGE))
        return True

    def close(self) -> None:
        """End every call: the bus is closed."""
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.stop_timer()
            self._finish(call, call.failure(CLOSED_MESSAGE, error_code="BUS_CLOSED"), inline=True)

    def _expire(self, callback_id: str) -> None:
        # Runs in the hub (a loop timer): user callbacks go to the workers, promises resolve here.
        call = self._calls.pop(callback_id, None)
        if call is not None:
            call.stop_timer()
            self.timeouts += 1
            self._finish(call, call.failure(TIMEOUT_MESSAGE), inline=False)

    def _finish(self, call: PendingCall, result: Result, *, inline: bool) -> None:
        if call.promise is not None:
            call.promise.set(result)
        elif call.callback is not None:
            self._run_user(call.callback, (result,), inline)


__all__ = ["CLOSED_MESSAGE", "DELETED_MESSAGE", "PendingCall", "PendingCalls", "TIMEOUT_MESSAGE"]
