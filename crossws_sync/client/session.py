"""A client's connections over time: the current one, reconnect attempts, lifecycle events.

:class:`Session` is the :class:`~.connection.Owner` of the client's connections: it turns
what they report into lifecycle events, acks and server events, and schedules reconnects
like the original (``repeat``, ``repeat_limit``, the backoff of :mod:`..core.backoff`).

It also owns the offline queue: calls made while a connection is on its way wait in
:attr:`Session.offline` (bounded by ``offline_queue_size``, each with its deadline counted from
the call) and are sent in call order by :meth:`Session.flush_offline` once a connection opens.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent
import gevent.event

from ..core.backoff import reconnect_delay
from ..core.listeners import ListenerRegistry
from ..results import Result
from ..wire import events, frames
from ..wire.positions import FRAME_FIELD, client_position
from ..wire.recovery import RECOVER_EVENT, RECOVER_PARAM, SESSION_EVENT
from ..wire.retry import RESTART_CODE, retry_hint
from ..wire.websocket import CLOSING, CONNECTING, OPEN
from .acks import OFFLINE_QUEUE_DROPPED, OFFLINE_QUEUE_FULL, WS_NOT_OPEN, Acks, Pending, PendingAck
from .connection import Connection
from .heartbeat import Heartbeat
from .options import ClientOptions
from .queue import EventQueue
from .replies import make_reply

logger = logging.getLogger("crossws_sync.client")

MANUAL_CLOSE_CODE = 4001
#: Longest wait for the server's answer to a resuming connection before ``open`` fires anyway.
RESUME_WAIT = 3.0
MANUAL_CLOSE_REASON = "client manual close"
#: At most one warning per this many seconds about fire-and-forget emits dropped by a full queue.
OVERFLOW_LOG_INTERVAL = 10.0


class Session:
    """The state of one client behind :class:`~.connector.WebSocketConnector`.

    Lifecycle events and server events fire on the client's event greenlet (:attr:`queue`),
    in order; at most one connection is current (:attr:`conn`), the others are ``detached``.
    """

    def __init__(self, config: ClientOptions) -> None:
        self.config = config
        self.lifecycle = ListenerRegistry(logger)
        self.server_events = ListenerRegistry(logger)
        self.queue = EventQueue()
        self.acks = Acks(self.queue, config.callback_timeout, config.pending_timeout)
        self.heartbeat = Heartbeat(config.ping_interval, pong_timeout=config.pong_timeout,
                                   ping_msg=config.ping_msg, fire=self.fire, url=config.url)
        #: The current connection (connecting, open or closing), ``None`` between connections.
        self.conn: Optional[Connection] = None
        #: Set while the current connection is open.
        self.opened = gevent.event.Event()
        #: Reconnect attempts since the last successful open.
        self.repeat = 0
        #: The offline queue: calls waiting for a connection, in call order (a dict ordered by
        #: insertion, so an entry that expires leaves it in O(1)).
        self.offline: Pending = {}
        self._flushing: Optional[Connection] = None  # the open connection the queue is sent on
        self._deciding: Optional[Connection] = None  # ended; its automatic reconnect is being decided
        self._queued_ids = itertools.count(1)
        self._overflow_drops = 0
        self._overflow_logged_at = float("-inf")
        self._forbid = False  # after manual_close, until connect
        self._reconnect_timer: Optional[gevent.Greenlet] = None
        #: the server's retry hint (seconds) for the next reconnect: a 1012 close's reason or
        #: a refused upgrade's ``Retry-After``; used once, instead of the schedule
        self.retry_hint: Optional[float] = None
        #: connection state recovery: the server's session id, the last position received in
        #: each stream, and whether the current connection resumed the session
        self.session_id: Optional[str] = None
        self.positions: Dict[str, List[Any]] = {}
        self.recovered = False
        self._resuming: Optional[Connection] = None
        self._resume_timer: Optional[gevent.Greenlet] = None

    def open_conn(self) -> Optional[Connection]:
        """The current connection if it is open."""
        conn = self.conn
        return conn if conn is not None and conn.state == OPEN else None

    def fire(self, event: str, *args: Any) -> None:
        """Fire the lifecycle event ``event`` on the event greenlet."""
        self.queue.post(self.lifecycle.emit, event, *args)

    # Control -----------------------------------------------------------------------------

    def connect(self) -> None:
        """Open a connection unless one is connecting or open (see ``WebSocketConnector.connect``)."""
        conn = self.conn
        if conn is not None and conn.state in (CONNECTING, OPEN):
            return
        self._forbid = False
        self.cancel_reconnect_timer()
        self.repeat = 0
        self.retry_hint = None
        self.drop_connection()
        self.open_connection()

    def manual_close(self) -> None:
        """Close for good (see ``WebSocketConnector.manual_close``)."""
        self._forbid = True
        self.cancel_reconnect_timer()
        self.heartbeat.stop()
        self._drop_offline("manual close")
        conn = self.conn
        if conn is not None and conn.state == CLOSING:
            return  # already closing (e.g. pong timeout): its own close event follows
        was_open = conn is not None and conn.state == OPEN
        self.drop_connection()
        if was_open:
            logger.info("closed by the client: %s", self.config.url)
            self.fire("close", Result(code=MANUAL_CLOSE_CODE, reason=MANUAL_CLOSE_REASON, was_clean=True, error=None))

    def reconnect(self, repeat_reset: bool = False) -> str:
        """Schedule a reconnect attempt (see ``WebSocketConnector.reconnect``); return
        ``"scheduled"``, ``"skipped"`` (one is scheduled, or after manual_close) or ``"limit"``.
        With ``repeat_reset``, :attr:`repeat` is set to 0 first (also when skipped), as the original."""
        if repeat_reset:
            self.repeat = 0
        # The original stops the heartbeat first, even when it then returns early with the
        # connection still open (repeat_limit=0); here it stops with the dropped connection.
        if self._reconnect_timer is not None or self._forbid:
            return "skipped"
        limit = self.config.repeat_limit
        if limit is not None and limit <= self.repeat:
            self.fire("repeat-limit", limit)
            return "limit"
        self.drop_connection()
        self.repeat += 1
        config = self.config
        hint, self.retry_hint = self.retry_hint, None
        if hint is not None:
            delay = min(hint, config.reconnect_max_interval)
        else:
            delay = reconnect_delay(self.repeat, threshold=config.fast_reconnect_threshold,
                                    interval=config.fast_reconnect_interval, max_interval=config.reconnect_max_interval,
                                    jitter=config.reconnect_jitter)
        logger.info("reconnect attempt %d in %.3fs to %s", self.repeat, delay, config.url)
        self.fire("reconnect", Result(repeat=self.repeat, timeout=delay))
        self._reconnect_timer = gevent.spawn_later(delay, self._reconnect_due)
        return "scheduled"

    def opening(self) -> bool:
        """Whether a connection is on its way: connecting now, a reconnect scheduled, or a failed
        attempt / a close whose automatic reconnect is being decided."""
        if self._forbid:
            return False
        conn = self.conn
        return ((conn is not None and (conn.state == CONNECTING or conn is self._deciding))
                or self._reconnect_timer is not None)

    # Sending and the offline queue --------------------------------------------------------

    def send(self, frame: bytes, ack: Optional[PendingAck], on_pending: Optional[Callable[[], Any]],
             timeouts: Tuple[float, float]) -> bool:
        """Send an event frame (``ack``: its request's ack, ``None`` for fire-and-forget).

        Open (and the offline queue sent): now. A connection on its way: queued, to be sent
        once open, unless the queue is full (``OFFLINE_QUEUE_FULL`` at once; a fire-and-forget
        emit is dropped and logged). Nothing coming, or ``offline_queue_size=0`` while not
        open: ``WS_NOT_OPEN`` at once. ``timeouts`` is ``(ack timeout, pending timeout)``; a
        queued call keeps them counted from now, a queued fire-and-forget emit expires (never
        sent) after the client's ``callback_timeout``. A callback failed at once runs before
        this returns.

        Returns:
            Whether the frame was handed to the socket now (``False`` when queued or failed).
        """
        conn = self.open_conn()
        if conn is not None and self._flushing is None:
            if ack is not None:
                self.acks.register(conn.pending, ack, on_pending, *timeouts)
            return conn.send(frame)
        size = self.config.offline_queue_size
        if size == 0 or (conn is None and not self.opening()):
            if ack is not None:
                self.acks.fail(ack, WS_NOT_OPEN, "WebSocket is not open")
            return False
        if len(self.offline) >= size:
            if ack is not None:
                self.acks.fail(ack, OFFLINE_QUEUE_FULL,
                               "Offline queue full (%d calls waiting for the connection): not sent" % size)
            else:
                self._overflowed()
            return False
        if ack is None:
            ack = PendingAck("queued-%d" % next(self._queued_ids), None, None)
            timeouts = (self.config.callback_timeout, self.config.pending_timeout)
        ack.frame = frame
        self.acks.register(self.offline, ack, on_pending, *timeouts)
        return False

    def flush_offline(self, conn: Connection) -> None:
        """Send the offline queue on ``conn``, which just opened (called once per open, from the
        connection's greenlet, before anything else can be sent on it).

        The queued frames go out in call order from their own greenlet, so the reader keeps
        reading acks meanwhile; each ack is registered on ``conn`` first and keeps its deadline.
        Calls made until the queue is empty join its end, so nothing overtakes it. Expired
        entries have left the queue already: they are never sent. A frame that must precede
        the queue (a future connection state recovery) belongs here, before the spawn.
        """
        if not self.offline:
            return
        logger.debug("sending %d queued calls", len(self.offline))
        self._flushing = conn
        gevent.spawn(self._send_queued, conn)

    def _send_queued(self, conn: Connection) -> None:
        try:
            # Stops when the connection goes: what is left waits for the next one (or is
            # dropped when none comes).
            while self.offline and not conn.detached and conn.state == OPEN:
                entry = next(iter(self.offline.values()))
                if entry.wants_reply:
                    self.acks.move(entry, conn.pending)
                else:
                    self.acks.discard(entry)
                conn.send(entry.frame)
        finally:
            if self._flushing is conn:
                self._flushing = None
                current = self.open_conn()
                if current is not None and current is not conn:
                    self.flush_offline(current)  # calls queued while this one was going away

    def _drop_offline(self, why: str) -> None:
        """Fail every queued call with ``OFFLINE_QUEUE_DROPPED``: no connection will come."""
        if not self.offline:
            return
        logger.info("dropping %d queued calls (%s): never sent", len(self.offline), why)
        self.acks.fail_all(self.offline, OFFLINE_QUEUE_DROPPED, "Not sent, the offline queue was dropped (%s): " % why)

    def _drop_offline_if_nothing_comes(self, why: str) -> None:
        if self.open_conn() is None and not self.opening():
            self._drop_offline(why)

    def _overflowed(self) -> None:
        self._overflow_drops += 1
        now = time.monotonic()
        if now - self._overflow_logged_at >= OVERFLOW_LOG_INTERVAL:
            logger.warning("offline queue full (%d calls): dropped %d fire-and-forget emits",
                           self.config.offline_queue_size, self._overflow_drops)
            self._overflow_drops = 0
            self._overflow_logged_at = now

    # Connections -------------------------------------------------------------------------

    def open_connection(self) -> None:
        """Start a new connection attempt; it becomes the current connection."""
        resource = None
        if self.config.recover and self.session_id is not None:
            base = self.config.target.resource
            resource = base + ("&" if "?" in base else "?") + RECOVER_PARAM + "=1"
        conn = Connection(self, self.config, resource=resource)
        self._resuming = conn if resource is not None else None
        self.conn = conn
        conn.greenlet = gevent.spawn(conn.run)

    def drop_connection(self) -> None:
        """Let go of the current connection without any local event (closing it with 4001)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        conn.detached = True
        self.opened.clear()
        if conn.state == CONNECTING:
            conn.cancel_attempt()
        elif conn.state == OPEN:
            conn.start_close(MANUAL_CLOSE_CODE, MANUAL_CLOSE_REASON)
        self.heartbeat.stop()
        self.acks.fail_all(conn.pending)

    def cancel_reconnect_timer(self) -> None:
        """Cancel a scheduled reconnect attempt."""
        timer, self._reconnect_timer = self._reconnect_timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)

    def _reconnect_due(self) -> None:
        self._reconnect_timer = None
        if not self._forbid and self.conn is None:
            self.open_connection()

    # What connections report (in the connection's greenlet) -------------------------------

    def conn_open(self, conn: Connection) -> None:
        if conn.detached:
            return
        logger.info("connected to %s", self.config.url)
        self.recovered = False
        if conn is self._resuming and self.session_id is not None:
            # Resuming: the request goes first; ``open`` fires with the server's answer.
            request = {"sid": self.session_id, "pos": self.positions}
            conn.send(frames.encode_text(events.encode_event(RECOVER_EVENT, request), mask=True))
            wait = min(self.config.connect_timeout, RESUME_WAIT)
            self._resume_timer = gevent.spawn_later(wait, self._resumed, conn, False)
            return
        self._opened(conn)

    def _resumed(self, conn: Connection, recovered: bool) -> None:
        """The server answered a resuming connection (or did not in time)."""
        timer, self._resume_timer = self._resume_timer, None
        if timer is None or conn.detached or conn is not self._resuming:
            return
        if timer is not gevent.getcurrent():
            timer.kill(block=False)
        self.recovered = recovered
        if not recovered:
            self.positions = {}
        self._opened(conn)

    def _opened(self, conn: Connection) -> None:
        self.opened.set()
        self.flush_offline(conn)
        self.fire("open", Result(url=self.config.url, recovered=self.recovered))
        self.queue.post(self._after_open, conn)
        self.heartbeat.start(conn)

    def _after_open(self, conn: Connection) -> None:
        # Like the original: ``repeat`` is reset after the open listeners ran.
        if not conn.detached:
            self.repeat = 0

    def conn_failed(self, conn: Connection, error: Exception) -> None:
        if conn.detached:
            return
        logger.info("connection attempt to %s failed: %s", self.config.url, error)
        self._deciding = conn  # calls queue meanwhile: a reconnect follows unless a listener stops it
        self.retry_hint = getattr(error, "retry_after", None)
        self.fire("error", Result(error=error, message=str(error), status=getattr(error, "status", None)))
        self.queue.post(self._after_failed_attempt, conn, error)

    def _after_failed_attempt(self, conn: Connection, error: Exception) -> None:
        # Runs after the ``error`` listeners: as the original, a failed attempt reconnects by
        # itself; once ``repeat_limit`` is reached the attempt ends with ``close`` 1006.
        if self._deciding is conn:
            self._deciding = None
        if conn.detached:
            return
        if self.reconnect() == "limit":
            self.fire("close", Result(code=1006, reason="", was_clean=False, error=error))
            self._drop_offline("repeat limit reached")
        else:
            self._drop_offline_if_nothing_comes("no reconnect")

    def conn_closed(self, conn: Connection, code: int, reason: str, was_clean: bool,
                    error: Optional[BaseException]) -> None:
        if conn.detached:
            return
        logger.info("connection to %s closed: %s %s", self.config.url, code, reason)
        if conn is self._resuming:
            timer, self._resume_timer = self._resume_timer, None
            if timer is not None:
                timer.kill(block=False)
        self.opened.clear()
        self.heartbeat.stop()
        self.acks.fail_all(conn.pending)
        self.retry_hint = retry_hint(reason) if code == RESTART_CODE else None
        self.fire("close", Result(code=code, reason=reason, was_clean=was_clean, error=error))
        auto = self.config.auto_reconnect and code not in self.config.no_reconnect_codes
        if auto:
            self._deciding = conn
        self.queue.post(self._after_close, conn, code, auto)

    def _after_close(self, conn: Connection, code: int, auto: bool) -> None:
        # After the close listeners (which may reconnect themselves, the original's pattern).
        if self._deciding is conn:
            self._deciding = None
        if conn.detached:
            return
        if auto and not self._forbid and self.reconnect() == "limit":
            self._drop_offline("repeat limit reached")
        self._drop_offline_if_nothing_comes("no reconnect after close %d" % code)

    def _on_session(self, conn: Connection, payload: Any) -> None:
        if type(payload) is not dict:
            return
        session_id = payload.get("sid")
        if type(session_id) is str and session_id:
            self.session_id = session_id
        if self._resume_timer is not None and conn is self._resuming:
            self._resumed(conn, payload.get("recovered") is True)

    def _note_position(self, text: str) -> None:
        try:
            position = client_position(events.loads(text))
        except (ValueError, TypeError):
            return
        if position is not None:
            stream, offset, epoch = position
            self.positions[stream] = [offset, epoch]

    def conn_binary(self, conn: Connection, data: bytes) -> None:
        """A binary message: the ``message`` event gets the ``bytes``; one that holds UTF-8 text is
        also handled as text (heartbeat, server event, ack), as the original's ``toString()`` does."""
        if conn.detached:
            return
        if self.lifecycle.has("message"):
            self.fire("message", data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return
        self.conn_text(conn, text, fire=False)

    def conn_text(self, conn: Connection, text: str, fire: bool = True) -> None:
        """A text message: the heartbeat's echo, an ack's reply or a server event."""
        if conn.detached:
            return
        logger.debug("received %r", text[:200])
        if fire and self.lifecycle.has("message"):
            self.fire("message", text)
        if self.heartbeat.on_text(conn, text):
            return
        event, payload, callback_id, ack_id = events.decode_server_message(text)
        if event is not None and event.startswith("_crossws."):
            if event == SESSION_EVENT:
                self._on_session(conn, payload)
                return
        elif FRAME_FIELD in text:
            self._note_position(text)
        if payload is events.MISSING:
            payload = None
        if callback_id is not None:
            self.acks.resolve(conn.pending, callback_id, payload)
        elif event is not None:
            if ack_id is None:
                self.queue.post(self.server_events.emit, event, payload)
            else:  # a server request: listeners that take a second argument get reply
                self.queue.post(self.server_events.emit_with_extra, event, make_reply(conn, ack_id), payload)
