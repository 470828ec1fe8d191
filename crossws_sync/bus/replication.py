"""Publishing history appends only once Redis replicas hold them (``history_replicas``).

With ``connection_state_recovery={"history_replicas": N}`` the append script does not publish.
Each append is followed, on the same connection, by ``WAIT N <timeout>``; its reply says how
many replicas acknowledged every write the connection made so far. Only then are the appends
it covers published, in order. So every position a client can ever see (live, or from history
read through a confirmed top) is on N replicas, and a promoted replica continues the stream with
the same epoch and the next offset.

One :class:`Confirmations` per connection keeps the appends not yet confirmed, in order, with
at most one ``WAIT`` in flight (a ``WAIT`` blocks its connection: commands queued behind it run
when it returns). When ``WAIT`` gives fewer than N (a replica down, lagging or paused), nothing
is published: the appends stay pending and ``WAIT`` is tried again, and a later confirmation
covers them too. The appends themselves are in the primary's history, so if the primary lives
they reach clients once confirmed; if it dies first, the promoted replica has or lacks them, and
in both cases no client has seen a position the replica does not hold (the design and why the
other fail-safes fall short: docs/reliability.md, "Recovery across a failover").

Publisher connections are told apart by their :attr:`~.publisher.Publisher.generation`: a
``WAIT`` confirms only appends answered on its own connection. Appends answered on a connection
that broke before their ``WAIT`` are handed to ``on_lost``: the caller sends them again, marked
as a second attempt, and the script then finds the first one if it was appended (by its message
id) instead of appending it twice.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List

import gevent
import redis

from .publisher import CallbackCommand

logger = logging.getLogger("crossws_sync.bus")

#: Seconds before ``WAIT`` is tried again after it timed out with nothing new to cover.
RETRY_DELAY = 0.1
#: Most appends kept waiting for a confirmation; beyond it the oldest are given up (not published:
#: they are in history and reach clients through it once a later append is confirmed).
MAX_PENDING = 10000
#: Seconds between two warnings about unconfirmed appends.
LOG_INTERVAL = 10.0

SENT, APPENDED, DONE = 0, 1, 2


class Pending:
    """One append on its way: sent, answered (positioned body known) or done with."""

    __slots__ = ("channel", "on_lost", "state", "body", "generation")

    def __init__(self, channel: str, on_lost: Callable[[BaseException], None]) -> None:
        self.channel = channel
        self.on_lost = on_lost
        self.state = SENT
        self.body = b""
        self.generation = 0


class Confirmations:
    """Appends of one publisher connection, published once ``replicas`` replicas confirmed them.

    Args:
        submit: queues a command on the connection (:meth:`~.publisher.Publisher.submit`).
        generation: the connection's current :attr:`~.publisher.Publisher.generation`.
        publish: ``publish(channel, body)`` sends a confirmed append's positioned body (must not
            block).
        replicas: how many replicas must acknowledge (``WAIT``'s first argument).
        timeout: seconds ``WAIT`` may block the connection.
        label: names the connection in logs.
        stats: counters updated here: ``confirmed``, ``unconfirmed_waits``,
            ``unconfirmed_given_up``, ``lost_before_confirmation``.
    """

    def __init__(self, submit: Callable[[Any], None], generation: Callable[[], int],
                 publish: Callable[[str, bytes], None], *, replicas: int, timeout: float, label: str,
                 stats: Dict[str, int]) -> None:
        self._submit = submit
        self._generation = generation
        self._publish = publish
        self.replicas = int(replicas)
        self._timeout_ms = max(1, int(timeout * 1000))
        self.label = label
        self.stats = stats
        for name in ("confirmed", "unconfirmed_waits", "unconfirmed_given_up", "lost_before_confirmation"):
            stats.setdefault(name, 0)
        self._pending: List[Pending] = []
        self._in_flight = False
        self._scheduled = False
        self._logged_at = -LOG_INTERVAL
        self._closed = False

    # Public API ---------------------------------------------------------------------------

    def track(self, channel: str, on_lost: Callable[[BaseException], None]) -> Pending:
        """Record an append just submitted on the connection (a ``WAIT`` follows it)."""
        pending = Pending(channel, on_lost)
        self._pending.append(pending)
        if len(self._pending) > MAX_PENDING:
            self._give_up(self._pending[:len(self._pending) - MAX_PENDING])
        self._schedule(0.0)
        return pending

    def appended(self, pending: Pending, body: bytes) -> None:
        """The append's reply: its positioned body (call from the reply's callback)."""
        if pending.state == SENT:
            pending.state = APPENDED
            pending.body = body
            pending.generation = self._generation()

    def failed(self, pending: Pending, error: BaseException) -> None:
        """The append failed; the caller deals with it (it is not published from here), after
        this. A broken connection first hands the older appends it answered but no ``WAIT``
        confirmed to their ``on_lost``, so that they are sent again before this one (order)."""
        pending.state = DONE
        if isinstance(error, redis.ResponseError):
            return
        for older in self._pending:
            if older is pending:
                break
            if older.state == APPENDED:
                older.state = DONE
                self.stats["lost_before_confirmation"] += 1
                older.on_lost(error)

    @property
    def waiting(self) -> int:
        """Appends not confirmed yet."""
        return sum(1 for pending in self._pending if pending.state != DONE)

    def close(self) -> None:
        self._closed = True

    # Internals ----------------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        if self._scheduled or self._in_flight or self._closed:
            return
        self._scheduled = True
        if delay:
            gevent.spawn_later(delay, self._send_wait)
        else:
            # After the appends submitted in this turn of the loop: one WAIT covers them all.
            gevent.get_hub().loop.run_callback(self._send_wait)

    def _send_wait(self) -> None:
        self._scheduled = False
        if self._in_flight or self._closed:
            return
        self._pending = [pending for pending in self._pending if pending.state != DONE]
        if not self._pending:
            return
        covered = len(self._pending)
        self._in_flight = True
        command = CallbackCommand(("WAIT", self.replicas, self._timeout_ms),
                        lambda reply: self._replied(covered, reply), self._failed)
        try:
            self._submit(command)
        except Exception as exc:  # closed: what is pending is lost with it
            self._failed(exc)

    def _replied(self, covered: int, reply: Any) -> None:
        self._in_flight = False
        generation = self._generation()
        try:
            acknowledged = int(reply)
        except (TypeError, ValueError):
            acknowledged = -1
        if acknowledged < self.replicas:
            self.stats["unconfirmed_waits"] += 1
            self._warn("history replicas confirmed %d of %d within %d ms on %s: %d message(s) not published until "
                       "they do", acknowledged, self.replicas, self._timeout_ms, self.label, self.waiting)
            self._schedule(RETRY_DELAY)
            return
        confirmed, self._pending = self._pending[:covered], self._pending[covered:]
        for pending in confirmed:
            if pending.state != APPENDED:
                continue
            pending.state = DONE
            if pending.generation != generation:
                # answered on a connection that broke before any WAIT confirmed it
                self.stats["lost_before_confirmation"] += 1
                pending.on_lost(redis.ConnectionError("connection lost before the replicas confirmed"))
                continue
            self.stats["confirmed"] += 1
            self._publish(pending.channel, pending.body)
        self._schedule(0.0)

    def _failed(self, error: BaseException) -> None:
        # The connection broke (or closed): what was appended on it may or may not be on the
        # replicas; the caller sends it again as a second attempt (found by id if it is there).
        self._in_flight = False
        generation = self._generation()
        kept: List[Pending] = []
        for pending in self._pending:
            if pending.state == APPENDED and (pending.generation != generation or self._closed
                                              or not isinstance(error, redis.ResponseError)):
                pending.state = DONE
                self.stats["lost_before_confirmation"] += 1
                pending.on_lost(error)
            elif pending.state != DONE:
                kept.append(pending)
        self._pending = kept
        if isinstance(error, redis.ResponseError):
            self._warn("WAIT refused on %s: %s", self.label, error)
            self._schedule(RETRY_DELAY)
        else:
            self._schedule(0.0)

    def _give_up(self, oldest: List[Pending]) -> None:
        for pending in oldest:
            if pending.state != DONE:
                pending.state = DONE
                self.stats["unconfirmed_given_up"] += 1
        self._warn("more than %d history appends unconfirmed on %s: the oldest are not published (they reach "
                   "clients from history once a later append is confirmed)", MAX_PENDING, self.label)

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            logger.warning(message, *args)


def wait_timeout(option: float, command_timeout: float) -> float:
    """Seconds one ``WAIT`` may block: the option, at most half the connection's command timeout
    (a reply later than that breaks the connection)."""
    return max(0.001, min(float(option), command_timeout / 2.0))


__all__ = ["Confirmations", "MAX_PENDING", "Pending", "RETRY_DELAY", "wait_timeout"]
