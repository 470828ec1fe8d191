"""One Redis Cluster primary's connections: a :class:`Shard` is its pipelined publisher and its
sharded subscriber (SSUBSCRIBE, per slot).

A :class:`ShardSubscriber` holds the channels its :class:`~crossws_sync.bus.cluster.ClusterNode`
*assigned* to one shard primary (the channels whose slot that primary serves). On every
(re)connection it subscribes the whole set again, **one SSUBSCRIBE per slot**: Redis refuses an
SSUBSCRIBE whose channels hash to different slots (``CROSSSLOT``), which is how redis-py before
8.1 lost its sharded subscriptions on reconnect. Its listener (run supervised by the node)
reads every reply from the connection, hands ``smessage`` pushes on assigned channels to
``on_message`` in order, matches ``ssubscribe`` / ``sunsubscribe`` / PING answers to what was
sent, and PINGs (RESP2 allows PING in subscribed mode).

Redis tells a sharded subscriber when its channels leave the shard: a slot migrated away, or
deleted, makes the server send an ``sunsubscribe`` push the client never asked for; an
SSUBSCRIBE for a slot the shard does not serve is answered ``MOVED``. Both are reported
to the node through ``on_moved`` (which refreshes the topology and re-homes the channels on
their new owner); ``CROSSSLOT`` and other refusals through ``on_refused``, and counted.
"""
from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import Any, Callable, Deque, Iterable, List, Optional, Set, Tuple

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from hiredis import pack_command

import redis

from ..errors import RedisUnavailableError
from ..io.supervisor import supervise
from ..wire.slots import Address, group_by_slot
from .connection import TIMED_OUT, RedisConnection, RedisSettings
from .publisher import Command, Publisher
from .subscriber import Stalled

logger = logging.getLogger("crossws_sync.nodes")

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 0.5


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _now() -> float:
    return time.monotonic()


class ShardSubscriber:
    """SSUBSCRIBE connection to one shard primary.

    Args:
        connect: returns a new, open :class:`RedisConnection` to the primary (may block).
        label: ``host:port`` of the primary.
        on_message: ``(channel, raw)`` for every ``smessage`` on an assigned channel, in order.
        on_moved: ``(channels, reason, error)``: Redis says these assigned channels are no longer
            served here (``reason`` ``"sunsubscribe"`` or ``"moved"``; ``error`` the MOVED text).
        on_refused: ``(channels, error)``: Redis refused an SSUBSCRIBE for another reason.
        on_state: ``(connected, error)`` when the connection comes up (every assigned channel
            sent) or goes down.
        on_change: after every confirmation, refusal or connection change.
        closed: whether the subscriber should stop.
        ping_interval, ping_timeout, force_ping: liveness settings.
    """

    def __init__(self, connect: Callable[[], RedisConnection], *, label: str,
                 on_message: Callable[[str, bytes], None],
                 on_moved: Callable[[List[str], str, Optional[str]], None],
                 on_refused: Callable[[List[str], str], None],
                 on_state: Callable[[bool, Optional[str]], None], closed: Callable[[], bool],
                 on_change: Callable[[], None] = lambda: None,
                 ping_interval: float, ping_timeout: float, force_ping: bool) -> None:
        self._connect = connect
        self.label = label
        self._on_message = on_message
        self._on_moved = on_moved
        self._on_refused = on_refused
        self._on_state = on_state
        self._on_change = on_change
        self._is_closed = closed
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.force_ping = force_ping
        self.latency = 0.0
        self.ping_sent_at: Optional[float] = None
        #: channels this shard should hold (re-subscribed on every connection)
        self.assigned: Set[str] = set()
        #: channels Redis confirmed on the current connection
        self.confirmed: Set[str] = set()
        self.connected = False
        self._conn: Optional[RedisConnection] = None
        self._pending: Deque[Tuple[str, Set[str]]] = deque()
        self._write_lock = Semaphore()
        self._changed = Event()
        self._stopped = False

    # Public API ---------------------------------------------------------------------------

    def assign(self, channels: Iterable[str]) -> None:
        """Hold ``channels`` here and SSUBSCRIBE them now if connected (one command per slot)."""
        new = [channel for channel in channels if channel not in self.assigned]
        self.assigned.update(new)
        conn = self._conn
        if conn is not None and new:
            self._send(conn, "SSUBSCRIBE", new)

    def release(self, channels: Iterable[str], *, unsubscribe: bool) -> None:
        """Stop holding ``channels``; send SUNSUBSCRIBE when ``unsubscribe`` and connected."""
        gone = [channel for channel in channels if channel in self.assigned]
        for channel in gone:
            self.assigned.discard(channel)
            self.confirmed.discard(channel)
        conn = self._conn
        if conn is not None and gone and unsubscribe:
            self._send(conn, "SUNSUBSCRIBE", gone)
        self.notify()

    def is_subscribed(self, channel: str) -> bool:
        """Whether ``channel`` is confirmed on the live connection."""
        return self._conn is not None and channel in self.confirmed

    def wait_changed(self, timeout: float) -> None:
        """Block until a confirmation, a refusal or a connection change (or ``timeout``)."""
        self._changed.wait(max(0.0, timeout))

    def notify(self) -> None:
        """Wake every :meth:`wait_changed` waiter."""
        changed, self._changed = self._changed, Event()
        changed.set()
        self._on_change()

    def stop(self) -> None:
        """Drop the connection for good (the shard is gone or the node closes)."""
        self._stopped = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self.notify()

    # The listener -------------------------------------------------------------------------

    def run(self) -> None:
        """The listener greenlet's body: connect, subscribe per slot, read; reconnect after a failure."""
        delay = _BACKOFF_FIRST
        while not self._done():
            if self._listen_once():
                delay = _BACKOFF_FIRST
            if self._done():
                break
            try:
                gevent.sleep(delay * (0.5 + random.random() / 2))
            except Stalled:
                pass
            delay = min(delay * 2, _BACKOFF_MAX)

    def _done(self) -> bool:
        return self._stopped or self._is_closed()

    def _listen_once(self) -> bool:
        conn: Optional[RedisConnection] = None
        error: Optional[str] = None
        try:
            conn = self._connect()
            self._listen(conn)
        except gevent.GreenletExit:
            raise
        except Stalled as exc:
            error = "ping: %s" % exc
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            error = str(exc) or exc.__class__.__name__
        except Exception as exc:  # supervised: log, drop the connection, start again
            logger.exception("sharded subscriber of %s crashed; restarting", self.label)
            error = "%s: %s" % (exc.__class__.__name__, exc)
        finally:
            was_connected = self.connected
            if self._conn is conn:
                self._conn = None
            self.connected = False
            self.ping_sent_at = None
            self._pending.clear()
            self.confirmed.clear()
            if conn is not None:
                conn.close()
            if not self._stopped:
                self._on_state(False, error or "closed")
            self.notify()
        return was_connected or conn is not None

    def _listen(self, conn: RedisConnection) -> None:
        self._conn = conn
        self.confirmed = set()
        self._pending.clear()
        if self._stopped:
            return
        self.connected = True
        if self.assigned:
            self._send(conn, "SSUBSCRIBE", sorted(self.assigned))
        self._on_state(True, None)
        self.notify()
        next_ping = _now() + self.ping_interval
        while not self._done() and self._conn is conn:
            now = _now()
            wait = (self.ping_sent_at + self.ping_timeout - now) if self.ping_sent_at is not None else next_ping - now
            reply = conn.next(min(max(wait, 0.01), 1.0))
            while reply is not False and reply is not TIMED_OUT:
                if isinstance(reply, redis.ResponseError):
                    self._error(str(reply))
                elif self._handle(reply):
                    next_ping = _now() + self.ping_interval
                reply = conn.ready()
            now = _now()
            if self.ping_sent_at is not None and now - self.ping_sent_at > self.ping_timeout:
                raise Stalled("sharded subscriber PING not answered within %.1fs" % self.ping_timeout)
            if self.force_ping and self.ping_sent_at is None and now >= next_ping and not self._write_lock.locked():
                self.ping_sent_at = now
                self._send(conn, "PING", [])

    def _handle(self, reply: Any) -> bool:
        """Process one reply; return True when it was a pong."""
        if isinstance(reply, bytes):
            reply = [b"pong", b""]
        if not isinstance(reply, list) or not reply:
            return False
        kind = reply[0]
        if kind == b"smessage":
            channel = _text(reply[1])
            if channel in self.assigned:
                try:
                    self._on_message(channel, reply[2])
                except Exception:
                    logger.exception("message handler failed on %s", channel)
            return False
        if kind == b"ssubscribe":
            channel = _text(reply[1])
            self._ack("SSUBSCRIBE", channel)
            if channel in self.assigned:
                self.confirmed.add(channel)
            self.notify()
            return False
        if kind == b"sunsubscribe":
            channel = _text(reply[1])
            asked = self._ack("SUNSUBSCRIBE", channel)
            self.confirmed.discard(channel)
            if not asked and channel in self.assigned:
                # Not ours: the slot left this shard (migrated or deleted). Re-home it.
                logger.info("redis %s dropped sharded channel %r (slot moved away); re-homing", self.label, channel)
                self._on_moved([channel], "sunsubscribe", None)
            self.notify()
            return False
        if kind == b"pong":
            if self._pending and self._pending[0][0] == "PING":
                self._pending.popleft()
            if self.ping_sent_at is not None:
                self.latency = _now() - self.ping_sent_at
                self.ping_sent_at = None
            return True
        return False

    def _ack(self, command: str, channel: str) -> bool:
        for entry in self._pending:
            if entry[0] == command and channel in entry[1]:
                entry[1].discard(channel)
                if not entry[1]:
                    self._pending.remove(entry)
                return True
        return False

    def _error(self, error: str) -> None:
        if not self._pending:
            logger.warning("unexpected error from sharded subscriber of %s: %s", self.label, error)
            return
        if error.startswith(("NOAUTH", "WRONGPASS")):
            raise redis.AuthenticationError(error)
        command, channels = self._pending.popleft()
        if command == "PING":
            self.ping_sent_at = None
            return
        wanted = sorted(channel for channel in channels if channel in self.assigned)
        if command == "SSUBSCRIBE" and wanted:
            if error.startswith(("MOVED", "ASK")):
                self._on_moved(wanted, "moved", error)
            else:
                self._on_refused(wanted, error)
        elif command == "SUNSUBSCRIBE":
            logger.debug("redis %s refused SUNSUBSCRIBE: %s", self.label, error)
        self.notify()

    # Writing ------------------------------------------------------------------------------

    def _send(self, conn: RedisConnection, command: str, channels: List[str]) -> None:
        """Write one command per slot (PING: one command without channels)."""
        groups = list(group_by_slot(channels).values()) if channels else [[]]
        with self._write_lock:
            for group in groups:
                if self._conn is not conn:
                    return
                try:
                    args: Tuple[Any, ...] = (command,) + tuple(group)
                    packed = pack_command(args)
                except (UnicodeError, TypeError) as exc:
                    self._on_refused(group, "cannot be encoded: %s" % exc)
                    continue
                self._pending.append((command, set(group)))
                try:
                    conn.sendall(packed)
                except Exception as exc:  # maybe written in part: drop the link, the listener reconnects
                    logger.warning("sending %s to %s failed: %s", command, self.label, exc)
                    conn.close()
                    return


class Shard:
    """One primary: its publisher connection (``SPUBLISH``, commands) and its sharded subscriber.

    Args:
        address: the primary's address.
        settings: how to reach it.
        command_timeout, ping_interval, ping_timeout, force_ping: as for the cluster node.
        on_publisher_down: ``(shard, error)`` when the publisher connection fails.
        on_message, on_change: as for :class:`ShardSubscriber`.
        on_moved, on_refused, on_state: as for :class:`ShardSubscriber`, with the shard first.
        closed: the cluster node is closed: the shard's greenlets stop.
        stopped: the cluster node is closed or abandoned (a forked child): the subscriber stops.
    """

    def __init__(self, address: Address, settings: RedisSettings, *, command_timeout: float,
                 ping_interval: float, ping_timeout: float, force_ping: bool,
                 on_publisher_down: Callable[["Shard", str], None], on_message: Callable[[str, bytes], None],
                 on_moved: Callable[["Shard", List[str], str, Optional[str]], None],
                 on_refused: Callable[["Shard", List[str], str], None],
                 on_state: Callable[["Shard", bool, Optional[str]], None], on_change: Callable[[], None],
                 closed: Callable[[], bool], stopped: Callable[[], bool]) -> None:
        self.address = address
        self.label = "%s:%d" % address
        self.settings = settings
        self.closed = False
        self.publisher_up = False
        self.latency = 0.0
        self.publisher = Publisher(lambda: RedisConnection.open(settings), label=self.label,
                                   on_down=lambda event, error: on_publisher_down(self, error),
                                   command_timeout=command_timeout)
        sub_settings = settings.replace_timeout(command_timeout)
        self.subscriber = ShardSubscriber(
            lambda: RedisConnection.open(sub_settings), label=self.label,
            on_message=on_message,
            on_moved=lambda channels, reason, error: on_moved(self, channels, reason, error),
            on_refused=lambda channels, error: on_refused(self, channels, error),
            on_state=lambda up, error: on_state(self, up, error),
            on_change=on_change,
            closed=stopped,
            ping_interval=ping_interval, ping_timeout=ping_timeout, force_ping=force_ping)
        self.greenlets = [
            gevent.spawn(supervise, loop, "%s of redis shard %s" % (name, self.label), logger,
                         stopped=lambda: closed() or self.closed, backoff=0.05)
            for loop, name in ((self.publisher.writer_loop, "publisher writer"),
                               (self.subscriber.run, "sharded subscriber"))]

    def command(self, args: Tuple[Any, ...], timeout: float) -> Any:
        """One command on this primary's publisher connection (pipelined).

        Raises:
            RedisUnavailableError: not answered within ``timeout`` or the connection failed.
            redis.ResponseError: Redis answered with an error.
        """
        command = Command(args)
        self.publisher.submit(command)
        try:
            return command.result.get(timeout=timeout)
        except gevent.Timeout:
            command.cancelled = True
            raise RedisUnavailableError("redis shard %s did not answer %s within %.1fs"
                                        % (self.label, args[0], timeout)) from None

    def close(self) -> None:
        """Stop the subscriber and the publisher and kill the shard's greenlets (without waiting)."""
        self.closed = True
        self.subscriber.stop()
        self.publisher.close()
        current = gevent.getcurrent()
        gevent.killall([g for g in self.greenlets if g is not current], block=False)


__all__ = ["Shard", "ShardSubscriber"]
