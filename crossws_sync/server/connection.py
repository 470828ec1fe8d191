"""One server-side WebSocket connection: a gevent driver around the sans-I/O protocol.

The protocol's rules (framing, UTF-8, ping/pong, the close handshake and its codes) are
:class:`~crossws_sync.wire.websocket.WebSocketProtocol`'s, shared with the client; this module reads
the socket, dispatches the protocol's events and owns the writing, with a single writer
discipline:

* the fast path writes with one non-blocking ``send`` on the raw socket, which cannot yield, so
  two greenlets can never interleave bytes of two frames;
* whatever the kernel does not take goes to a bounded outbox drained by one flusher greenlet;
  while the outbox is non-empty every write queues behind it, so order is kept;
* over ``max_outbox_bytes`` the slow-consumer policy applies: the connection is dropped (close
  code 1008 ``slow consumer`` recorded locally), and senders to other connections never wait.

Reading: a plain socket is served from the event loop (:meth:`WebSocketConnection.start_reading`):
while the client is idle only its read watcher is armed; each read and the handlers it calls run
on a worker greenlet of :class:`~crossws_sync.io.readers.ReaderPool`, one read at a time per
connection. A TLS socket (its decrypted bytes may wait inside the wrapper) and a socket that
gevent-websocket upgraded are read by :meth:`WebSocketConnection.run`, in the greenlet that
accepted the upgrade.
"""
from __future__ import annotations

import logging
import socket as _stdsocket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, Iterator, List, Optional, Tuple, Union

import gevent

from ..wire import frames
from ..wire.events import MISSING, encode_event
from ..io.readers import ReaderPool, reader_pool
from ..io.sockets import SocketIO
from ..wire.websocket import BINARY, CLOSED, CLOSING, CONNECTING, OPEN, PING, TEXT, WebSocketProtocol, sendable_close_code

if TYPE_CHECKING:
    from ..wire.deflate import PerMessageDeflate
    from ..wire.request import Request

logger = logging.getLogger("crossws_sync.connection")

#: Close code recorded when the slow-consumer policy drops a connection.
SLOW_CONSUMER_CODE = 1008

_PING_FRAME = frames.encode_frame(frames.OP_PING, b"")

#: Coalesced frames are written at once when they reach this many bytes.
_CORK_LIMIT = 64 * 1024
_READ_SIZE = 65536


class _WriteBatch:
    """Connections with coalesced frames, written by one loop callback per event-loop iteration."""

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._pending: List["WebSocketConnection"] = []
        self._scheduled = False

    def add(self, conn: "WebSocketConnection") -> None:
        self._pending.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._run)

    def _run(self) -> None:
        # A loop callback (runs in the hub): _uncork never blocks.
        self._scheduled = False
        pending, self._pending = self._pending, []
        for conn in pending:
            try:
                conn._uncork()
            except Exception:  # never lose the other connections' frames
                logger.exception("writing coalesced frames to %r failed", conn)


_batches: Dict[Any, _WriteBatch] = {}


def _read_step(conn: "WebSocketConnection") -> None:
    conn._read_step()


def _batch_for(loop: Any) -> _WriteBatch:
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = _WriteBatch(loop)
    return batch


class ConnectionHandler:
    """What a connection reports to its owner (the adapter's WebSocket service)."""

    def on_text(self, conn: "WebSocketConnection", text: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_binary(self, conn: "WebSocketConnection", data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_pong(self, conn: "WebSocketConnection", data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_error(self, conn: "WebSocketConnection", error: Exception) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_close(self, conn: "WebSocketConnection", code: int, reason: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class WebSocketConnection:
    """A server-side WebSocket: the ``socket`` that handlers receive.

    Applications may set their own attributes on it (``socket.player_id = ...``), as in the
    original. ``is_alive`` and ``enter_background_time`` drive the server's liveness sweep.

    Attributes:
        request: the :class:`~crossws_sync.wire.request.Request` that opened it.
        identity: what the auth hook returned when it accepted the upgrade (or ``None``).
        socket_id: the id bound with ``set_user_socket`` (``None`` until then).
        recovered: with ``connection_state_recovery``, whether this connection resumed a
            disconnected client's session (its user, rooms and missed messages); known when the
            ``connection`` handler runs.
    """

    CONNECTING = CONNECTING
    OPEN = OPEN
    CLOSING = CLOSING
    CLOSED = CLOSED

    # Slots keep an idle connection small (an instance dict of ~35 entries cost ~1.5 KiB);
    # "__dict__" stays for the application's own attributes, created when the first is set.
    __slots__ = (
        "_sock", "_io", "_raw_send", "request", "identity", "socket_id", "recovered", "session_id", "streams",
        "recovering", "awaiting_recovery", "is_alive", "enter_background_time", "connected_at",
        "messages_received", "bytes_received", "messages_sent", "bytes_sent", "_handler", "_proto", "_prepare",
        "_state", "_outbox", "_outbox_bytes", "_cork", "_cork_bytes", "_batch", "_max_outbox", "_flusher",
        "_close_timeout", "_local_close", "_closer", "_readers", "_last_batch", "_rate_state", "_problems",
        "__dict__", "__weakref__",
    )

    def __init__(
        self,
        sock: Any,
        request: "Request",
        handler: ConnectionHandler,
        *,
        max_message_size: Optional[int] = 1 << 20,
        max_outbox_bytes: int = 4 << 20,
        close_timeout: float = 5.0,
        identity: Any = None,
        deflate: Optional["PerMessageDeflate"] = None,
    ) -> None:
        self._sock = sock
        self._io = SocketIO(sock)
        self._raw_send = self._io.send  # never yields (on TLS: always BlockingIOError, the flusher writes)
        self.request = request
        self.identity = identity
        self.socket_id: Optional[str] = None
        #: connection state recovery (when on): whether this connection resumed an earlier
        #: session, its session id, and the positions delivered to it (``StreamTracker``)
        self.recovered = False
        self.session_id: Optional[str] = None
        self.streams: Any = None
        self.recovering = False
        self.awaiting_recovery: Optional[gevent.Greenlet] = None
        self.is_alive = True
        self.enter_background_time = 0.0
        self.connected_at = time.monotonic()
        #: traffic of this connection: data messages and their frame bytes, each way (for metrics)
        self.messages_received = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        self._handler = handler
        self._proto = WebSocketProtocol(client=False, max_message_size=max_message_size)
        #: permessage-deflate, when negotiated: data frames at or over its threshold leave compressed
        self._prepare = None
        if deflate is not None:
            self._proto.use_deflate(deflate)
            self._prepare = self._proto.prepare
        self._state = OPEN
        self._outbox: Optional[Deque[bytes]] = None  # created on the first partial write
        self._outbox_bytes = 0
        self._cork: Optional[List[bytes]] = None
        self._cork_bytes = 0
        self._batch = _batch_for(gevent.get_hub().loop)
        self._max_outbox = max_outbox_bytes
        self._flusher: Optional[gevent.Greenlet] = None
        self._close_timeout = close_timeout
        #: a close decided here rather than by the protocol (slow consumer, terminate)
        self._local_close: Optional[Tuple[int, str]] = None
        self._closer: Optional[gevent.Greenlet] = None
        self._readers: Optional[ReaderPool] = None  # with start_reading()
        self._last_batch = 0

    # Public API --------------------------------------------------------------------------

    @property
    def ready_state(self) -> int:
        """``0`` connecting, ``1`` open, ``2`` closing, ``3`` closed (as the ``ws`` module)."""
        return self._state

    @property
    def open(self) -> bool:
        """Whether frames can be sent."""
        return self._state == OPEN

    @property
    def closed(self) -> bool:
        """Whether the connection is fully closed."""
        return self._state == CLOSED

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted for sending that the kernel has not taken yet."""
        return self._outbox_bytes + (self._cork_bytes if self._cork is not None else 0)

    @property
    def slow_consumer(self) -> bool:
        """Whether the slow-consumer policy dropped this connection."""
        return self._local_close is not None and self._local_close[1] == "slow consumer"

    @property
    def close_code(self) -> int:
        """The close code once closed (1006 when the peer vanished without a close frame)."""
        return self._local_close[0] if self._local_close is not None else self._proto.close_code

    @property
    def close_reason(self) -> str:
        """The reason that goes with :attr:`close_code`."""
        return self._local_close[1] if self._local_close is not None else self._proto.close_reason

    def send(self, data: Union[str, bytes]) -> bool:
        """Send a text frame (``str``) or a binary frame (``bytes``). Returns False when not open.

        Raises:
            TypeError: ``data`` is neither ``str`` nor bytes-like.
        """
        return self.send_frame(frames.encode_data(data))

    def send_event(self, event: str, payload: Any = MISSING) -> bool:
        """Push ``{"event", "payload"}`` to this client (what ``to_socket_id`` does locally)."""
        return self.send_frame(frames.encode_text(encode_event(event, payload)))

    def send_frame(self, frame: bytes) -> bool:
        """Write an already-encoded frame (a broadcast encodes once and calls this per member).

        Never blocks; returns False when the connection is not open. Frames keep their order:
        they are coalesced and written with one non-blocking ``send()`` per connection before the
        event loop next waits for I/O (:class:`_WriteBatch`); what the kernel does not take waits
        in the connection's outbox, bounded by ``max_outbox_bytes`` (slow-consumer policy).
        """
        if self._state != OPEN:
            return False
        if self._prepare is not None:
            frame = self._prepare(frame)
        self.messages_sent += 1
        self.bytes_sent += len(frame)
        if self._flusher is not None:
            return self._enqueue(frame)
        cork = self._cork
        if cork is not None:
            cork.append(frame)
            self._cork_bytes += len(frame)
            if self._cork_bytes >= _CORK_LIMIT:
                self._uncork()
            return True
        self._cork = [frame]
        self._cork_bytes = len(frame)
        self._batch.add(self)
        return True

    def _write_first(self, data: bytes) -> None:
        """Queue raw bytes ahead of every frame (the handshake's ``101`` response): they are
        written with the frames sent before the event loop next runs its callbacks, in one
        ``send`` (the client gets the response and a welcome message in one segment)."""
        cork = self._cork
        if cork is not None:
            cork.insert(0, data)
            self._cork_bytes += len(data)
            return
        self._cork = [data]
        self._cork_bytes = len(data)
        self._batch.add(self)

    def _uncork(self) -> None:
        """Write the coalesced frames (a loop callback: never blocks)."""
        cork, self._cork = self._cork, None
        if not cork or self._state == CLOSED:
            return
        self._write(cork[0] if len(cork) == 1 else b"".join(cork))

    def ping(self, data: bytes = b"") -> bool:
        """Send a protocol ping."""
        if self._state != OPEN:
            return False
        return self._write(_PING_FRAME if not data else self._proto.ping_frame(data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake with ``code`` and ``reason`` (sent exactly on the wire).

        The connection is torn down when the peer answers or after ``close_timeout`` seconds.

        Raises:
            ValueError: a code no endpoint may send (1000-1003, 1007-1014 and 3000-4999 may).
        """
        if not sendable_close_code(code):  # refused whatever the state: the caller's bug shows at once
            raise ValueError("close code %r cannot be sent (1000-1003, 1007-1014 or 3000-4999)" % (code,))
        if self._state != OPEN:
            return
        frame = self._proto.send_close(code, reason)
        self._state = CLOSING
        self._write(frame)
        self._closer = gevent.spawn_later(self._close_timeout, self._abort)

    def terminate(self) -> None:
        """Drop the TCP connection at once, without a close handshake (close code 1006)."""
        if self._state == CLOSED:
            return
        self._local_close = (1006, "")
        self._abort()

    def __repr__(self) -> str:
        return "<WebSocketConnection socket_id=%r state=%d>" % (self.socket_id, self._state)

    # Reading loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Read and dispatch in this greenlet until the connection ends; fires ``on_close``
        exactly once. (:meth:`start_reading` does the same without holding a greenlet.)"""
        reader = self._io  # waits, then reads: no failed recv() per request
        try:
            while self._state != CLOSED:
                try:
                    data = reader.recv(_READ_SIZE)
                except OSError:
                    break
                if not data or not self._received(data):
                    break
                if self._last_batch > 16:
                    # A peer that keeps our socket full would otherwise never let the hub run
                    # (recv returns at once while data is there): let the others have a turn.
                    gevent.idle()
        finally:
            self._proto.receive_eof()
            self._finish()

    def start_reading(self) -> bool:
        """Serve this connection from the event loop: while nothing arrives it holds no
        greenlet; each read and its events run on a worker of the :class:`ReaderPool` (the
        handlers may block: the connection's next read waits for them, as with :meth:`run`).
        Returns immediately; ``on_close`` fires once the connection ends. False (nothing
        started) on TLS, whose reads need :meth:`run`."""
        if self._io.tls:
            return False
        self._readers = reader_pool()
        try:
            self._io.watch(self._readable)
        except OSError:  # released already: end it from a worker, as a read would
            self._readers = None
            gevent.spawn(self._read_step)
        return True

    # Internals ---------------------------------------------------------------------------

    def _readable(self) -> None:
        # The watcher's callback, in the hub: one read step on a worker, watcher off meanwhile.
        self._io.unwatch()
        readers = self._readers
        if readers is not None:
            readers.run(_read_step, self)

    def _read_step(self) -> None:
        """Read once, dispatch; then wait for the next bytes, or end the connection."""
        ended = True
        try:
            try:
                data: Optional[bytes] = self._io.recv_now(_READ_SIZE)
            except BlockingIOError:  # woken without data after all
                data = None
            except OSError:
                data = b""
            ended = data is not None and (not data or not self._received(data))
        finally:
            if not ended:
                try:
                    self._io.watch(self._readable)  # one read per wake-up: the others get their turn
                except OSError:
                    ended = True
            if ended:
                self._proto.receive_eof()
                self._finish()

    def _received(self, data: bytes) -> bool:
        """Feed ``data`` to the protocol and dispatch its events. False: the connection ended."""
        proto = self._proto
        handler = self._handler
        self.bytes_received += len(data)
        events = proto.receive_data(data)
        self._last_batch = len(events)
        for kind, value in events:
            if kind == TEXT:
                self.messages_received += 1
                handler.on_text(self, value)
            elif kind == BINARY:
                self.messages_received += 1
                handler.on_binary(self, value)
            elif kind == PING:
                pong = proto.data_to_send()
                if pong and self._state == OPEN:
                    self._write(pong)
            else:  # PONG
                self.is_alive = True
                handler.on_pong(self, value)
            if self._state == CLOSED:
                return False
        if proto.state == CLOSED:  # the peer's close frame, or a protocol violation
            self._protocol_closed()
            return False
        return self._state != CLOSED

    def _protocol_closed(self) -> None:
        """Send the protocol's last words (the close answer), then close the TCP connection."""
        if self._proto.error is not None:
            self._handler.on_error(self, self._proto.error)
        answer = self._proto.data_to_send()
        if answer and self._state != CLOSED:
            self._write(answer)
        if self._state == OPEN:
            self._state = CLOSING
        self._shutdown()

    def _write(self, data: bytes) -> bool:
        # Like send_frame() but also while CLOSING (for the close frame itself), and never
        # coalesced; frames still coalesced go first, so the order on the wire is kept.
        if self._cork is not None:
            self._uncork()
        if self._flusher is not None:  # a flusher exists exactly while bytes are queued
            return self._enqueue(data)
        try:
            sent = self._raw_send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._abort()
            return False
        if sent < len(data):
            self._enqueue(data[sent:])
        return True

    def _enqueue(self, data: bytes) -> bool:
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        if self._outbox_bytes > self._max_outbox:
            logger.warning("dropping slow consumer %r: %d bytes queued", self, self._outbox_bytes)
            self._local_close = (SLOW_CONSUMER_CODE, "slow consumer")
            self._outbox = None
            self._outbox_bytes = 0
            self._abort()
            return False
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush)
        return True

    def _flush(self) -> None:
        outbox = self._outbox
        try:
            while outbox:  # checked after every sendall: later writes queue behind
                chunk = outbox.popleft() if len(outbox) == 1 else b"".join(self._drain(outbox))
                self._sock.sendall(chunk)
                self._outbox_bytes = max(0, self._outbox_bytes - len(chunk))
        except OSError:
            self._abort()
        finally:
            self._flusher = None

    @staticmethod
    def _drain(outbox: Deque[bytes], limit: int = 256 * 1024) -> Iterator[bytes]:
        size = 0
        while outbox and size < limit:
            chunk = outbox.popleft()
            size += len(chunk)
            yield chunk

    def _shutdown(self) -> None:
        """Close the TCP connection after flushing what is queued (bounded by the close timeout)."""
        if self._flusher is not None:
            self._flusher.join(self._close_timeout)
        self._abort()

    def _abort(self) -> None:
        if self._state == CLOSED:
            return
        self._state = CLOSED
        try:
            self._sock.shutdown(_stdsocket.SHUT_RDWR)
        except OSError:
            pass
        if self._flusher is not None and self._flusher is not gevent.getcurrent():
            self._flusher.kill(block=False)

    def _finish(self) -> None:
        if self._state != CLOSED:
            self._abort()
        if self._closer is not None:
            self._closer.kill(block=False)
            self._closer = None
        self._outbox = None
        self._outbox_bytes = 0
        self._cork = None
        self._io.close()
        self._handler.on_close(self, self.close_code, self.close_reason)
