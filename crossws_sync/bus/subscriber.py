"""The subscriber connection of one Redis node: wanted channels, SUBSCRIBE bookkeeping, liveness.

A :class:`Subscriber` keeps the set of channels its node wants and subscribes the whole set on
every (re)connection. Its listener (run supervised by the node) connects, subscribes, reads
every reply from its :class:`~crossws_sync.bus.connection.RedisConnection`, hands messages on wanted channels to
``on_message`` in order, matches SUBSCRIBE / UNSUBSCRIBE / PING answers to what was sent
(``wait_ticket`` tells a caller when its SUBSCRIBE is confirmed) and, with ``force_ping``,
PINGs: a PING not answered within ``ping_timeout`` drops the link. After a failure it
reconnects with a short jittered backoff. It reports to its node through hooks; health itself
(and the watchdog for a read that stalls mid-reply) stays with the node.
"""
from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Set, Tuple

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from hiredis import pack_command

import redis

from .connection import TIMED_OUT, RedisConnection

logger = logging.getLogger("crossws_sync.nodes")

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 0.5
#: Channels per SUBSCRIBE / UNSUBSCRIBE command: a refused or unencodable name costs one chunk,
#: which is then retried channel by channel, never the whole set.
CHUNK = 256


class Stalled(Exception):
    """The subscriber stopped answering PINGs (or a read stalled half-way)."""

    #: The event reported through ``on_down``.
    event = "ping"


class Deaf(Stalled):
    """The subscriber answers PINGs but missed the node's liveness probe: reconnect."""

    event = "probe"


class SubscribeTicket:
    """What :meth:`Subscriber.request_subscribe` sent, to wait for with :meth:`Subscriber.wait_ticket`."""

    __slots__ = ("generation", "sequences")

    def __init__(self, generation: int, sequences: Dict[str, int]) -> None:
        self.generation = generation
        self.sequences = sequences


def _now() -> float:
    return time.monotonic()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _pack(*args: Any) -> bytes:
    """One command in RESP (``UnicodeError`` / ``TypeError`` for an argument it cannot encode)."""
    packed: bytes = pack_command(args)
    return packed


def _wire(command: str) -> str:
    """The Redis command for one of ours (RESUB is a SUBSCRIBE of the whole wanted set)."""
    return "SUBSCRIBE" if command == "RESUB" else command


class Subscriber:
    """The subscriber side of one Redis node.

    Args:
        connect: returns a new, open :class:`RedisConnection` (may block).
        label: ``host:port`` for messages.
        on_message: ``(channel, raw)`` for every message on a wanted channel, in order.
        on_ready: every wanted channel is confirmed (or refused) on a live connection.
        on_down: ``(event, error)`` when the connection is lost (``close``, ``ping``, ``error``).
        on_attempt: after each connection attempt, successful or not.
        on_subscription_error: ``(channel, event, error)`` when Redis refuses a command.
        is_healthy: whether the node currently counts this subscriber as healthy.
        closed: whether the node is closed.
        ping_interval, ping_timeout, force_ping: liveness settings.
    """

    def __init__(self, connect: Callable[[], RedisConnection], *, label: str, on_message: Callable[[str, bytes], None],
                 on_ready: Callable[[], None], on_down: Callable[[str, str], None], on_attempt: Callable[[], None],
                 on_subscription_error: Callable[[str, str, str], None], is_healthy: Callable[[], bool],
                 closed: Callable[[], bool], ping_interval: float, ping_timeout: float, force_ping: bool) -> None:
        self._connect = connect
        self.label = label
        self._on_message = on_message
        self._on_ready = on_ready
        self._on_down = on_down
        self._on_attempt = on_attempt
        self._on_subscription_error = on_subscription_error
        self._is_healthy = is_healthy
        self._is_closed = closed
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.force_ping = force_ping
        #: Round trip of the last subscriber PING in seconds.
        self.latency = 0.0
        #: When the PING now in flight was sent (``None``: none in flight).
        self.ping_sent_at: Optional[float] = None
        self._wanted: Set[str] = set()
        self._confirmed: Set[str] = set()
        self._failed: Dict[str, str] = {}
        self._sent: Dict[str, int] = {}
        self._acked: Dict[str, int] = {}
        self._pending: Deque[Tuple[str, Set[str]]] = deque()
        self._pending_subs: Dict[str, int] = {}
        #: wanted channels that Redis refused (or that cannot be encoded) on a re-subscribe,
        #: where no caller was there to be told: the subscriber stays unhealthy while any remain
        self._missing: Dict[str, str] = {}
        self._sub_conn: Optional[RedisConnection] = None
        self._generation = 0
        self._sub_write_lock = Semaphore()
        self._changed = Event()

    @property
    def _closed(self) -> bool:
        return self._is_closed()

    def want(self, channels: Iterable[str]) -> None:
        """Add ``channels`` to the wanted set without sending anything (before the first connect)."""
        self._wanted.update(channels)

    def disconnect(self) -> None:
        """Drop the connection (the node is closing)."""
        conn, self._sub_conn = self._sub_conn, None
        if conn is not None:
            conn.close()

    # Public API ---------------------------------------------------------------------------

    @property
    def wanted_channels(self) -> Set[str]:
        """A copy of the channels this node keeps subscribed (replayed on every reconnect)."""
        return set(self._wanted)

    def request_subscribe(self, channels: Iterable[str]) -> SubscribeTicket:
        """Add ``channels`` to the wanted set and send SUBSCRIBE if connected (non-blocking)."""
        new = [channel for channel in channels]
        for channel in new:
            self._wanted.add(channel)
            self._failed.pop(channel, None)
            self._missing.pop(channel, None)
        conn = self._sub_conn
        sequences: Dict[str, int] = {}
        if conn is not None and new:
            for channel in new:
                self._sent[channel] = self._sent.get(channel, 0) + 1
                sequences[channel] = self._sent[channel]
            self._send(conn, "SUBSCRIBE", new)
        return SubscribeTicket(self._generation, sequences)

    def wait_ticket(self, ticket: SubscribeTicket, channels: Iterable[str], deadline: float) -> Dict[str, str]:
        """Wait until each channel is subscribed on this node.

        Returns:
            ``{channel: status}`` with status ``"ok"``, ``"down"`` (the subscriber is not
            connected: the channel is subscribed when it reconnects), ``"failed: <error>"``
            (Redis refused it) or ``"timeout"``.
        """
        channels = list(channels)
        while True:
            statuses = {channel: self._status(ticket, channel) for channel in channels}
            if "pending" not in statuses.values():
                return statuses
            remaining = deadline - _now()
            if remaining <= 0:
                return {c: ("timeout" if s == "pending" else s) for c, s in statuses.items()}
            self._changed.wait(remaining)

    def _status(self, ticket: SubscribeTicket, channel: str) -> str:
        if channel in self._failed:
            return "failed: %s" % self._failed[channel]
        if self._closed or self._sub_conn is None:
            return "down"
        if channel not in self._wanted:
            return "failed: unsubscribed meanwhile"
        if ticket.generation == self._generation and channel in ticket.sequences:
            return "ok" if self._acked.get(channel, 0) >= ticket.sequences[channel] else "pending"
        return "ok" if channel in self._confirmed else "pending"

    def is_subscribed(self, channel: str) -> bool:
        """Whether ``channel`` is confirmed on the current subscriber connection."""
        return channel in self._confirmed and self._sub_conn is not None

    @property
    def missing_channels(self) -> Dict[str, str]:
        """Wanted channels that could not be re-subscribed, with Redis's error (a copy)."""
        return dict(self._missing)

    def unsubscribe(self, channels: Iterable[str]) -> None:
        """Remove ``channels`` from the wanted set and send UNSUBSCRIBE if connected."""
        channels = list(channels)
        for channel in channels:
            self._failed.pop(channel, None)
            self._missing.pop(channel, None)
        gone = [channel for channel in channels if channel in self._wanted]
        for channel in gone:
            self._wanted.discard(channel)
            self._confirmed.discard(channel)
        conn = self._sub_conn
        if conn is not None and gone:
            self._send(conn, "UNSUBSCRIBE", gone)
        self._check_ready()
        self.notify()

    def _check_ready(self) -> None:
        if (self._sub_conn is not None and not self._is_healthy() and not self._missing
                and self._wanted <= self._confirmed):
            self._on_ready()

    # Internals ----------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake every :meth:`wait_ticket` waiter to look again."""
        changed, self._changed = self._changed, Event()
        changed.set()

    def _send(self, conn: RedisConnection, command: str, channels: List[str]) -> bool:
        """Write SUBSCRIBE / RESUB (a SUBSCRIBE of the wanted set after a reconnect) /
        UNSUBSCRIBE / PING on the subscriber connection, :data:`CHUNK` channels per command.

        A channel that cannot be encoded is refused on its own; the others go out."""
        if not channels:
            return self._send_packed(conn, command, set(), None)
        ok = True
        for start in range(0, len(channels), CHUNK):
            chunk = channels[start:start + CHUNK]
            try:
                packed = _pack(_wire(command), *chunk)
            except (UnicodeError, TypeError):
                for channel in chunk:  # find the bad name; the others still go
                    try:
                        packed = _pack(_wire(command), channel)
                    except (UnicodeError, TypeError) as exc:
                        self._refuse(command, channel, "cannot be encoded: %s" % exc)
                        continue
                    ok = self._send_packed(conn, command, {channel}, packed) and ok
                continue
            ok = self._send_packed(conn, command, set(chunk), packed) and ok
        return ok

    def _send_packed(self, conn: RedisConnection, command: str, channels: Set[str], packed: Optional[bytes]) -> bool:
        with self._sub_write_lock:
            if self._sub_conn is not conn:
                return False
            self._pending.append((command, channels))
            if command != "UNSUBSCRIBE":
                for channel in channels:
                    self._pending_subs[channel] = self._pending_subs.get(channel, 0) + 1
            try:
                conn.sendall(packed if packed is not None else _pack(command))
            except Exception as exc:  # maybe written in part: drop the link, the listener reconnects
                logger.warning("sending %s to %s failed: %s", _wire(command), self.label, exc)
                conn.close()
                return False
        return True

    def run(self) -> None:
        """The listener greenlet's body: connect, subscribe, read; reconnect after a failure."""
        delay = _BACKOFF_FIRST
        while not self._closed:
            if self._listen_once():
                delay = _BACKOFF_FIRST
            if self._closed:
                break
            try:
                gevent.sleep(delay * (0.5 + random.random() / 2))
            except Stalled:  # a late watchdog kill: nothing is connected any more
                pass
            delay = min(delay * 2, _BACKOFF_MAX)

    def _listen_once(self) -> bool:
        """Connect, subscribe and read until the link fails; return whether it had connected."""
        conn: Optional[RedisConnection] = None
        connected = False
        try:
            conn = self._connect()
            connected = True
            self._listen(conn)
        except gevent.GreenletExit:
            raise
        except Stalled as exc:
            self._on_down(exc.event, str(exc))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._on_down("close", str(exc) or exc.__class__.__name__)
        except Exception as exc:  # supervised: log, drop the connection, start again
            logger.exception("subscriber listener of %s crashed; restarting", self.label)
            self._on_down("error", "%s: %s" % (exc.__class__.__name__, exc))
        finally:
            if self._sub_conn is conn:
                self._sub_conn = None
            self.ping_sent_at = None
            self._pending.clear()
            self._pending_subs.clear()
            self._confirmed.clear()
            if conn is not None:
                conn.close()
            self._on_attempt()
            self.notify()
        return connected

    def _listen(self, conn: RedisConnection) -> None:
        self._generation += 1
        self._sent = {}
        self._acked = {}
        self._confirmed = set()
        self._pending.clear()
        self._pending_subs.clear()
        self._sub_conn = conn
        self._wanted.update(self._missing)  # retried on every connection
        self._missing.clear()
        initial = sorted(self._wanted)
        if initial:
            for channel in initial:
                self._sent[channel] = 1
            self._send(conn, "RESUB", initial)
            self._check_ready()
        else:
            self._on_ready()
        self.notify()
        next_ping = _now() + self.ping_interval
        while not self._closed:
            now = _now()
            if self.ping_sent_at is not None:
                wait = self.ping_sent_at + self.ping_timeout - now
            elif self.force_ping and self._confirmed:
                wait = next_ping - now
            else:
                wait = 1.0
            # One recv for every reply that arrived; a timed-out read keeps a partial reply buffered.
            reply = conn.next(min(max(wait, 0.01), 1.0))
            while reply is not False and reply is not TIMED_OUT:  # every reply already read
                if isinstance(reply, redis.ResponseError):
                    self._refused(str(reply))
                elif self._handle(reply):
                    next_ping = _now() + self.ping_interval
                reply = conn.ready()
            now = _now()
            if self.ping_sent_at is not None and now - self.ping_sent_at > self.ping_timeout:
                raise Stalled("subscriber PING not answered within %.1fs" % self.ping_timeout)
            if (self.force_ping and self.ping_sent_at is None and now >= next_ping
                    and not self._sub_write_lock.locked() and self._confirmed):
                self.ping_sent_at = now
                self._send(conn, "PING", [])

    def _handle(self, reply: Any) -> bool:
        """Process one reply; return True when it was a pong."""
        if isinstance(reply, bytes):  # +PONG outside subscribed mode
            reply = [b"pong", b""]
        if not isinstance(reply, list) or not reply:
            return False
        kind = reply[0]
        if kind == b"message":
            channel = _text(reply[1])
            if channel in self._wanted:
                try:
                    self._on_message(channel, reply[2])
                except Exception:  # the handler is the bus's; never let it kill the listener
                    logger.exception("message handler failed on %s", channel)
            return False
        if kind == b"subscribe":
            channel = _text(reply[1])
            self._ack_pending("SUBSCRIBE", channel)
            self._acked[channel] = self._acked.get(channel, 0) + 1
            if channel in self._wanted:
                self._confirmed.add(channel)
            self._check_ready()
            self.notify()
            return False
        if kind == b"unsubscribe":
            channel = _text(reply[1])
            self._ack_pending("UNSUBSCRIBE", channel)
            if channel not in self._wanted:
                self._confirmed.discard(channel)
                if not self._pending_subs.get(channel):
                    # every SUBSCRIBE of it was answered: forget its counters (dynamic channels
                    # such as room namespaces must not grow these dicts forever)
                    self._sent.pop(channel, None)
                    self._acked.pop(channel, None)
            self.notify()
            return False
        if kind == b"pong":
            if self._pending and self._pending[0][0] == "PING":
                self._pending.popleft()
            if self.ping_sent_at is not None:
                self.latency = _now() - self.ping_sent_at
                self.ping_sent_at = None
                self._check_ready()
            return True
        return False

    def _ack_pending(self, command: str, channel: str) -> None:
        for entry in self._pending:
            if (entry[0] == command or (command == "SUBSCRIBE" and entry[0] == "RESUB")) and channel in entry[1]:
                entry[1].discard(channel)
                if command == "SUBSCRIBE":
                    self._drop_pending_sub(channel)
                if not entry[1]:
                    self._pending.remove(entry)
                return

    def _drop_pending_sub(self, channel: str) -> None:
        count = self._pending_subs.get(channel, 0) - 1
        if count > 0:
            self._pending_subs[channel] = count
        else:
            self._pending_subs.pop(channel, None)

    def _refused(self, error: str) -> None:
        """Redis answered a subscriber command with an error (ACL, ...)."""
        if not self._pending:
            logger.warning("unexpected error from subscriber of %s: %s", self.label, error)
            return
        if error.startswith(("NOAUTH", "WRONGPASS")):
            # Not about a channel: the connection is not authenticated (Redis restarted with a
            # password?). Drop it; the listener reconnects (and authenticates) with backoff.
            raise redis.AuthenticationError(error)
        command, channels = self._pending.popleft()
        if command == "PING":
            logger.warning("subscriber PING on %s refused: %s", self.label, error)
            self.ping_sent_at = None
            return
        if command != "UNSUBSCRIBE":
            for channel in channels:
                self._drop_pending_sub(channel)
        conn = self._sub_conn
        if command != "UNSUBSCRIBE" and len(channels) > 1 and conn is not None:
            # Redis refuses a whole command for one bad channel: ask again one by one.
            for channel in sorted(channels):
                if channel in self._wanted:
                    self._send(conn, command, [channel])
            return
        for channel in channels:
            self._refuse(command, channel, error)
        self._check_ready()
        self.notify()

    def _refuse(self, command: str, channel: str, error: str) -> None:
        """One channel's SUBSCRIBE / UNSUBSCRIBE failed for good on this connection.

        A caller's SUBSCRIBE learns it through its ticket and the channel is no longer wanted;
        a channel of the re-subscribed set stays wanted but missing (the subscriber is unhealthy
        until it is unsubscribed or accepted on a later connection)."""
        if command == "SUBSCRIBE":
            self._wanted.discard(channel)
            self._failed[channel] = error
        elif command == "RESUB" and channel in self._wanted:
            self._wanted.discard(channel)
            self._missing[channel] = error
            if len(self._missing) == 1:  # one line per connection, however many are missing
                logger.warning("redis %s: wanted channel %r could not be re-subscribed (%s); the subscriber "
                               "stays unhealthy while channels are missing (see missing_channels)",
                               self.label, channel, error)
        (logger.debug if command == "RESUB" else logger.warning)(
            "redis %s refused %s %s: %s", self.label, _wire(command), channel, error)
        try:
            self._on_subscription_error(channel, "subscribe" if command == "RESUB" else command.lower(), error)
        except Exception:
            logger.exception("on_subscription_error hook failed")



__all__ = ["Deaf", "Stalled", "SubscribeTicket", "Subscriber"]
