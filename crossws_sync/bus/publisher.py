"""The publisher connection of one Redis node: commands pipelined, replies matched in order.

Commands (publishes, PINGs, ``PUBSUB NUMSUB``) are packed when submitted and written together
at the end of the event-loop iteration: one loop callback joins everything submitted in that
iteration and writes it with one non-blocking ``send()`` (:meth:`RedisConnection.send`), from
the hub, with no greenlet switch. Only what the kernel does not take at once (or the first connect) goes
to the *writer* greenlet, which may block; while it writes, newer commands wait behind it, so
the byte order on the wire is the submission order.

A *reader* greenlet per connection takes Redis's replies from the connection (hiredis parses
every reply that arrived in one read; see :mod:`~crossws_sync.bus.connection`) and matches them in order to the commands in flight. A command Redis refuses fails alone; a
broken connection fails every command in flight (their fallbacks try other nodes), is
dropped, and the next command opens a new one.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

import gevent
from hiredis import pack_command
import redis
from gevent.event import AsyncResult, Event

from ..errors import RedisUnavailableError
from .connection import TIMED_OUT, RedisConnection

logger = logging.getLogger("crossws_sync.nodes")


class Command:
    """A command whose caller waits for the reply in ``result``."""

    __slots__ = ("args", "result", "cancelled")

    def __init__(self, args: Tuple[Any, ...]) -> None:
        self.args = args
        self.result: AsyncResult = AsyncResult()
        self.cancelled = False

    def succeed(self, reply: Any) -> None:
        self.result.set(reply)

    def fail(self, error: BaseException) -> None:
        self.result.set_exception(error)


class NoWaitCommand:
    """A publish nobody waits for: no AsyncResult; on failure ``fallback(error)`` runs instead."""

    __slots__ = ("args", "fallback", "cancelled")

    def __init__(self, args: Tuple[Any, ...], fallback: Callable[[BaseException], None]) -> None:
        self.args = args
        self.fallback = fallback
        self.cancelled = False

    def succeed(self, reply: Any) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        self.fallback(error)


class CallbackCommand:
    """A command nobody waits for, whose reply goes to ``on_reply`` and error to ``on_error``
    (both run in the connection's reader greenlet or the hub: they must not block)."""

    __slots__ = ("args", "cancelled", "_on_reply", "_on_error")

    def __init__(self, args: Tuple[Any, ...], on_reply: Callable[[Any], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self.args = args
        self.cancelled = False
        self._on_reply = on_reply
        self._on_error = on_error

    def succeed(self, reply: Any) -> None:
        self._on_reply(reply)

    def fail(self, error: BaseException) -> None:
        self._on_error(error)


AnyCommand = Any  # Command | NoWaitCommand | CallbackCommand


class Publisher:
    """Pipelined commands on one Redis connection.

    Args:
        open_connection: returns an open :class:`RedisConnection` (may block; called from the
            writer greenlet only).
        label: ``host:port`` for messages.
        on_down: ``(event, error)`` when connecting fails or the connection breaks.
        command_timeout: a reply not started within this many seconds of its command breaks
            the connection (a hung server).
    """

    def __init__(self, open_connection: Callable[[], RedisConnection], *, label: str,
                 on_down: Callable[[str, str], None], command_timeout: float) -> None:
        self._open_connection = open_connection
        self.label = label
        self._on_down = on_down
        self._command_timeout = command_timeout
        self._loop = gevent.get_hub().loop
        self._conn: Optional[RedisConnection] = None
        self._send: Optional[Callable[[bytes], int]] = None  # the connection's non-blocking send
        self._submitted: List[Tuple[AnyCommand, bytes]] = []
        self._flush_scheduled = False
        self._backlog = b""  # written by the writer greenlet, before anything newer
        self._writing = False  # the writer greenlet owns the wire
        self._inflight: Deque[AnyCommand] = deque()
        self._waiting_since: Optional[float] = None
        self._wake_writer = Event()
        self._reader: Optional[gevent.Greenlet] = None
        self._closed = False
        #: counts the connections opened (a reply read says which one it came on, see :attr:`generation`)
        self._generation = 0

    # Public API ---------------------------------------------------------------------------

    def writer_loop(self) -> None:
        """The writer greenlet's body (run under :func:`supervise` by the node)."""
        while not self._closed:
            self._wake_writer.wait()
            self._wake_writer.clear()
            if not self._closed:
                self._write_blocking()

    def submit(self, command: AnyCommand) -> None:
        """Queue ``command``; it is written at the end of this event-loop iteration.

        Raises:
            RedisUnavailableError: the publisher is closed.
        """
        if self._closed:
            raise RedisUnavailableError("redis node %s closed" % self.label)
        self._submitted.append((command, pack_command(command.args)))
        if not self._flush_scheduled and not self._writing:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)

    @property
    def generation(self) -> int:
        """Which connection is current: 1 for the first, one more for each reconnect. Read in a
        reply's callback, it names the connection the reply came on (``WAIT`` counts only the
        writes of its own connection)."""
        return self._generation

    def close(self) -> None:
        """Fail every queued and in-flight command and drop the connection."""
        self._closed = True
        error = RedisUnavailableError("redis node %s closed" % self.label)
        conn = self._conn
        if conn is not None:
            self.broken(conn, error)
        submitted, self._submitted = self._submitted, []
        _fail([command for command, _ in submitted], error)
        self._wake_writer.set()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=True, timeout=5)

    def broken(self, conn: RedisConnection, exc: BaseException) -> None:
        """The connection failed: fail every command in flight, drop it, report the node down."""
        if conn is not self._conn:
            return
        self._conn = None
        self._send = None
        self._backlog = b""
        reader, self._reader = self._reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)
        inflight, self._inflight = self._inflight, deque()
        self._waiting_since = None
        if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError, RedisUnavailableError)):
            logger.error("publisher of %s failed unexpectedly: %r", self.label, exc)
        conn.close()
        if not self._closed:
            self._on_down("error", str(exc))
        _fail(list(inflight), RedisUnavailableError("redis node %s: %s" % (self.label, exc)))
        if self._submitted and not self._closed:
            self._wake_writer.set()  # commands queued after the failure get a new connection

    # Internals: writing -------------------------------------------------------------------

    def _take(self) -> bytes:
        """Move the submitted commands in flight; return their bytes."""
        submitted, self._submitted = self._submitted, []
        live = [(command, packed) for command, packed in submitted if not command.cancelled]
        if not live:
            return b""
        if not self._inflight:
            self._waiting_since = time.monotonic()
        self._inflight.extend(command for command, _ in live)
        return live[0][1] if len(live) == 1 else b"".join([packed for _, packed in live])

    def _flush(self) -> None:
        # A loop callback (runs in the hub): must not block.
        self._flush_scheduled = False
        if self._writing or not self._submitted:
            return
        send = self._send
        if send is None:  # not connected yet (the writer connects)
            self._hand_to_writer(b"")
            return
        data = self._take()
        if not data:
            return
        try:
            sent = send(data)
        except OSError:
            # EAGAIN (always on TLS), or a broken connection: either way the writer greenlet retries with a
            # blocking sendall, and reports a failure from there (health hooks and failover
            # callbacks may block; they must never run in the hub).
            sent = 0
        if sent < len(data):
            self._hand_to_writer(data[sent:])

    def _hand_to_writer(self, remainder: bytes) -> None:
        self._backlog = remainder
        self._writing = True
        self._wake_writer.set()

    def _write_blocking(self) -> None:
        self._writing = True
        try:
            while True:
                conn = self._conn
                if conn is None:
                    if not self._submitted:
                        return
                    try:
                        conn = self._connect()
                    except Exception as exc:  # could not even connect: fail what waits
                        submitted, self._submitted = self._submitted, []
                        if not self._closed:
                            self._on_down("error", str(exc))
                        _fail([command for command, _ in submitted],
                              RedisUnavailableError("redis node %s: %s" % (self.label, exc)))
                        return
                data, self._backlog = self._backlog + self._take(), b""
                if not data:
                    return
                try:
                    conn.sendall(data)
                except Exception as exc:
                    self.broken(conn, exc)
                    return
        finally:
            self._writing = False

    def _connect(self) -> RedisConnection:
        conn = self._open_connection()
        self._conn = conn
        self._generation += 1
        self._send = conn.send  # never yields; on TLS it always refuses, and the writer writes
        self._inflight = deque()
        self._waiting_since = None
        self._reader = gevent.spawn(self._reader_loop, conn)
        return conn

    # Internals: reading -------------------------------------------------------------------

    def _reader_loop(self, conn: RedisConnection) -> None:
        if self._conn is not conn:
            return
        inflight = self._inflight
        try:
            while self._conn is conn:
                reply = conn.next()
                if reply is TIMED_OUT:
                    since = self._waiting_since
                    if since is not None and time.monotonic() - since >= self._command_timeout:
                        raise redis.TimeoutError("no reply within %.1fs" % self._command_timeout)
                    continue
                while reply is not False:
                    if not inflight:
                        raise redis.ConnectionError("reply without a command (protocol out of step)")
                    command = inflight.popleft()
                    if isinstance(reply, redis.ResponseError):
                        command.fail(reply)
                    else:
                        command.succeed(reply)
                    reply = conn.ready()
                self._waiting_since = time.monotonic() if inflight else None
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            self.broken(conn, exc)


def _fail(commands: List[AnyCommand], error: BaseException) -> None:
    for command in commands:
        command.fail(error)


__all__ = ["CallbackCommand", "Command", "NoWaitCommand", "Publisher"]
