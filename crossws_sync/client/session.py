"""A client's connections over time: the current one, reconnect attempts, lifecycle events.

:class:`Session` is the :class:`~.connection.Owner` of the client's connections: it turns
what they report into lifecycle events, acks and server events, and schedules reconnects
like the original (``repeat``, ``repeat_limit``, the backoff of :mod:`..core.backoff`).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Tuple

import gevent
import gevent.event

from ..core.backoff import reconnect_delay
from ..core.listeners import ListenerRegistry
from ..results import Result
from ..wire import events
from ..wire.websocket import CLOSING, CONNECTING, OPEN
from .acks import WS_NOT_OPEN, Acks, PendingAck
from .connection import Connection
from .heartbeat import Heartbeat
from .options import ClientOptions
from .queue import EventQueue
from .replies import make_reply

logger = logging.getLogger("crossws_sync.client")

MANUAL_CLOSE_CODE = 4001
MANUAL_CLOSE_REASON = "client manual close"


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
        self._forbid = False  # after manual_close, until connect
        self._reconnect_timer: Optional[gevent.Greenlet] = None

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
        self.drop_connection()
        self.open_connection()

    def manual_close(self) -> None:
        """Close for good (see ``WebSocketConnector.manual_close``)."""
        self._forbid = True
        self.cancel_reconnect_timer()
        self.heartbeat.stop()
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
        delay = reconnect_delay(self.repeat, threshold=config.fast_reconnect_threshold,
                                interval=config.fast_reconnect_interval, max_interval=config.reconnect_max_interval)
        logger.info("reconnect attempt %d in %.3fs to %s", self.repeat, delay, config.url)
        self.fire("reconnect", Result(repeat=self.repeat, timeout=delay))
        self._reconnect_timer = gevent.spawn_later(delay, self._reconnect_due)
        return "scheduled"

    def opening(self) -> bool:
        """Whether a connection is on its way: connecting now, or a reconnect is scheduled."""
        if self._forbid:
            return False
        conn = self.conn
        return (conn is not None and conn.state == CONNECTING) or self._reconnect_timer is not None

    def request(self, ack: PendingAck, frame: bytes, on_pending: Optional[Callable[[], Any]],
                timeouts: Tuple[float, float]) -> None:
        """Send a request whose ack is a promise: now if open, once open if a connection is on
        its way (within ``connect_timeout``), else fail it at once with ``WS_NOT_OPEN``."""
        conn = self.open_conn()
        if conn is not None:
            self._send_request(conn, ack, frame, on_pending, timeouts)
        elif self.opening():
            gevent.spawn(self._send_when_open, ack, frame, on_pending, timeouts)
        else:
            ack.result.set(Result(success=False, error="WebSocket is not open", error_code=WS_NOT_OPEN))  # type: ignore[union-attr]

    def _send_request(self, conn: Connection, ack: PendingAck, frame: bytes,
                      on_pending: Optional[Callable[[], Any]], timeouts: Tuple[float, float]) -> None:
        self.acks.register(conn.pending, ack, on_pending, *timeouts)
        conn.send(frame)

    def _send_when_open(self, ack: PendingAck, frame: bytes, on_pending: Optional[Callable[[], Any]],
                        timeouts: Tuple[float, float]) -> None:
        self.opened.wait(self.config.connect_timeout)
        conn = self.open_conn()
        if conn is None:
            ack.result.set(Result(success=False, error="WebSocket is not open", error_code=WS_NOT_OPEN))  # type: ignore[union-attr]
            return
        self._send_request(conn, ack, frame, on_pending, timeouts)

    # Connections -------------------------------------------------------------------------

    def open_connection(self) -> None:
        """Start a new connection attempt; it becomes the current connection."""
        conn = Connection(self, self.config)
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
        self.opened.set()
        self.fire("open", Result(url=self.config.url))
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
        self.fire("error", Result(error=error, message=str(error), status=getattr(error, "status", None)))
        self.queue.post(self._after_failed_attempt, conn, error)

    def _after_failed_attempt(self, conn: Connection, error: Exception) -> None:
        # Runs after the ``error`` listeners: as the original, a failed attempt reconnects by
        # itself; once ``repeat_limit`` is reached the attempt ends with ``close`` 1006.
        if conn.detached:
            return
        if self.reconnect() == "limit":
            self.fire("close", Result(code=1006, reason="", was_clean=False, error=error))

    def conn_closed(self, conn: Connection, code: int, reason: str, was_clean: bool,
                    error: Optional[BaseException]) -> None:
        if conn.detached:
            return
        logger.info("connection to %s closed: %s %s", self.config.url, code, reason)
        self.opened.clear()
        self.heartbeat.stop()
        self.acks.fail_all(conn.pending)
        self.fire("close", Result(code=code, reason=reason, was_clean=was_clean, error=error))
        if self.config.auto_reconnect:
            self.queue.post(self._after_close, conn, code)

    def _after_close(self, conn: Connection, code: int) -> None:
        if not conn.detached and not self._forbid and code not in self.config.no_reconnect_codes:
            self.reconnect()

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
        if payload is events.MISSING:
            payload = None
        if callback_id is not None:
            self.acks.resolve(conn.pending, callback_id, payload)
        elif event is not None:
            if ack_id is None:
                self.queue.post(self.server_events.emit, event, payload)
            else:  # a server request: listeners that take a second argument get reply
                self.queue.post(self.server_events.emit_with_extra, event, make_reply(conn, ack_id), payload)
