"""WebSocketConnector: the Python client of the original's wire protocol, on gevent.

Blocking style: ``emit_and_wait`` blocks the calling greenlet, everything else returns at once.
Per connection there is one greenlet that connects, performs the HTTP upgrade and then reads
frames; writes go through one lock per connection (single writer discipline), so any number of
greenlets may emit at once. User code (listeners, ack callbacks, ``on_pending``) never runs in
the reading greenlet: it runs, in arrival order, on one *event greenlet* per client, so a
listener may block (even in ``emit_and_wait``) without stalling the heartbeat or the acks.

This module is the facade; the parts live beside it: the options (:mod:`.options`), the event
greenlet (:mod:`.queue`), pending acks (:mod:`.acks`), the heartbeat (:mod:`.heartbeat`), one
connection (:mod:`.connection`) and the connections over time with reconnects (:mod:`.session`).
The pure parts live in :mod:`crossws_sync.wire` and :mod:`crossws_sync.core`: the query string
(``url``), the opening handshake (``handshake``), the WebSocket protocol shared with the server
(``websocket``), JSON frames (``events``), the reconnect schedule (``backoff``).

Differences from the original, all deliberate:

* closing or reconnecting while a connection attempt is in flight is safe;
* ``manual_close()`` fires the local ``close`` event (code 4001) and ``connect()`` reopens;
* pending acks fail at once with ``CONNECTION_CLOSED`` when their connection goes away;
* heartbeat timers stop with the connection; only an expected echo counts as a pong; latency
  uses a monotonic clock;
* ``connect_timeout`` bounds TCP connect + TLS + upgrade;
* server events live in their own registry, so a server push named ``open`` or ``close`` can
  never fire lifecycle listeners;
* an empty ``url`` raises :class:`~crossws_sync.errors.ConfigError` instead of retrying forever;
* invalid timeouts raise ``ConfigError`` from ``emit`` and resolve (never raise) the promise;
* optional automatic reconnection on close (``auto_reconnect``);
* an offline queue (``offline_queue_size``): calls made while a connection is on its way are
  sent in order once it opens, instead of failing with ``WS_NOT_OPEN``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, FrozenSet, Hashable, Iterable, Mapping, Optional, Tuple, Union

from dataclasses import replace

import gevent.event
import gevent.ssl

from ..config import positive_number
from ..core.listeners import ListenerRegistry, check_event_name
from ..errors import ConfigError
from ..results import Result
from ..wire import events, frames
from ..wire.url import build_connect_url, js_string
from .acks import (
    CALLBACK_TIMEOUT,
    CONNECTION_CLOSED,
    INVALID_ARGUMENT,
    OFFLINE_QUEUE_DROPPED,
    OFFLINE_QUEUE_FULL,
    WS_NOT_OPEN,
    PendingAck,
)
from .connection import MAX_MESSAGE_SIZE  # noqa: F401  (re-exported, as the constants below)
from .heartbeat import PONG_TIMEOUT_CODE, PONG_TIMEOUT_REASON  # noqa: F401
from .options import client_options
from .session import MANUAL_CLOSE_CODE, MANUAL_CLOSE_REASON, Session  # noqa: F401

logger = logging.getLogger("crossws_sync.client")

#: Events the client itself fires; everything else registered with ``on`` is a server event.
LIFECYCLE_EVENTS: FrozenSet[str] = frozenset(
    {"open", "close", "error", "message", "ping", "pong", "pong-timeout", "reconnect", "repeat-limit"}
)

_ALL: Any = object()


class WebSocketConnector:
    """A WebSocket client for servers speaking the original's protocol (ours or the Node.js one).

    Connects in the background on construction (unless ``autoconnect=False``). Times are
    seconds. Events are listened to with :meth:`on` and fired on the client's event greenlet,
    in order: lifecycle events (``open``, ``close``, ``error``, ``message``, ``ping``,
    ``pong``, ``pong-timeout``, ``reconnect``, ``repeat-limit``) and server-pushed events.

    Args:
        url: ``ws://`` or ``wss://`` address, may hold a path and a query.
        ping_interval: delay from open / last pong to the next heartbeat.
        pong_timeout: how long to wait for the heartbeat echo before closing with 4002; also
            how long a client-initiated close waits for the server's close answer.
        fast_reconnect_threshold: number of reconnect attempts at the fast interval.
        fast_reconnect_interval: delay of the fast attempts; unit and minimum of the backoff.
        reconnect_max_interval: cap of the exponential backoff.
        ping_msg: heartbeat text (must equal the server's ``heartbeat_str``).
        callback_timeout: default ack timeout of ``emit`` / ``emit_with_promise``.
        repeat_limit: maximum reconnect attempts (``None``: unlimited).
        pending_timeout: default delay before ``on_pending`` fires.
        custom_params: appended to the query string like the original (``String(value)``).
        connect_timeout: bound on TCP connect + TLS + WebSocket upgrade of one attempt.
        auto_reconnect: call :meth:`reconnect` after a ``close`` whose code is not in
            ``no_reconnect_codes`` (off by default, like the original).
        no_reconnect_codes: close codes that never trigger the automatic reconnection.
        autoconnect: connect on construction.
        headers: extra HTTP headers of the upgrade request (mapping or ``(name, value)`` pairs).
        ssl_context: context for ``wss://`` (default: ``gevent.ssl.create_default_context()``);
            it must be gevent-aware (created after ``monkey.patch_all()`` or by ``gevent.ssl``).
        per_message_deflate: offer permessage-deflate (RFC 7692): ``True`` or a dict of the same
            keys as the server's option (off by default); used when the server agrees.
        offline_queue_size: how many calls may wait for a connection on its way (connecting, or
            a reconnect coming); they are sent in call order once it opens. ``0`` turns the
            queue off: calls fail at once with ``WS_NOT_OPEN`` whenever the socket is not open.
        recover: resume the session after a reconnect when the server has connection state
            recovery on (the server replays what was missed; see :attr:`recovered`). Servers
            without it, ours or the original, are not affected.
        reconnect_jitter: ``"full"`` (default): each reconnect delay is drawn uniformly in
            ``[0, d]``, ``d`` being the schedule's delay, so clients that lost the same server do
            not come back together; ``"original"``: the original's exact schedule. Either way a
            server's retry hint (a 1012 close's ``retry=<s>s``, a 503's ``Retry-After``) sets
            the next delay instead (capped at ``reconnect_max_interval``).

    Raises:
        ConfigError: an empty or unusable ``url``, or any invalid option value.
    """

    def __init__(
        self,
        url: str = "",
        *,
        ping_interval: float = 10.0,
        pong_timeout: float = 2.0,
        fast_reconnect_threshold: int = 3,
        fast_reconnect_interval: float = 3.0,
        reconnect_max_interval: float = 120.0,
        ping_msg: str = "",
        callback_timeout: float = 5.0,
        repeat_limit: Optional[int] = None,
        pending_timeout: float = 0.1,
        custom_params: Optional[Mapping[Any, Any]] = None,
        connect_timeout: float = 10.0,
        auto_reconnect: bool = False,
        no_reconnect_codes: Iterable[int] = (4001, 4010, 4011, 4012),
        autoconnect: bool = True,
        headers: Optional[Union[Mapping[str, str], Iterable[Tuple[str, str]]]] = None,
        ssl_context: Optional[gevent.ssl.SSLContext] = None,
        per_message_deflate: Union[bool, Mapping[str, Any], None] = False,
        offline_queue_size: int = 1000,
        recover: bool = True,
        reconnect_jitter: str = "full",
    ) -> None:
        self._config = client_options(
            url, ping_interval=ping_interval, pong_timeout=pong_timeout,
            fast_reconnect_threshold=fast_reconnect_threshold, fast_reconnect_interval=fast_reconnect_interval,
            reconnect_max_interval=reconnect_max_interval, ping_msg=ping_msg, callback_timeout=callback_timeout,
            repeat_limit=repeat_limit, pending_timeout=pending_timeout, custom_params=custom_params,
            connect_timeout=connect_timeout, auto_reconnect=auto_reconnect, no_reconnect_codes=no_reconnect_codes,
            headers=headers, ssl_context=ssl_context, per_message_deflate=per_message_deflate,
            offline_queue_size=offline_queue_size, reconnect_jitter=reconnect_jitter)
        self._config = replace(self._config, recover=bool(recover))
        self._session = Session(self._config)
        if autoconnect:
            self._session.open_connection()

    def __repr__(self) -> str:
        state = "open" if self.connected else ("reconnecting" if self.reconnecting() else "closed")
        return "<WebSocketConnector %s %s>" % (self._config.url, state)

    # Public API: state --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL actually connected to (``url`` plus ``custom_params``)."""
        return self._config.url

    @property
    def connected(self) -> bool:
        """Whether the WebSocket is open right now."""
        return self._session.open_conn() is not None

    @property
    def repeat(self) -> int:
        """Reconnect attempts since the last successful open (the original's ``repeat``)."""
        return self._session.repeat

    @property
    def recovered(self) -> bool:
        """Whether the current connection resumed the previous one's session: the server
        recovered the user, its rooms and every message sent meanwhile (connection state
        recovery, when the server has it on). Also given to ``open`` listeners as
        ``result.recovered``."""
        return self._session.recovered

    @property
    def latency(self) -> Optional[float]:
        """Round-trip time of the last heartbeat in seconds (monotonic clock), ``None`` before one."""
        return self._session.heartbeat.latency

    @property
    def queued(self) -> int:
        """Calls waiting in the offline queue for a connection (expired ones have left it)."""
        return len(self._session.offline)

    def reconnecting(self) -> bool:
        """``True`` from the first scheduled reconnect attempt until the next successful open."""
        return self._session.repeat > 0

    def get_ping_interval(self) -> float:
        """Return the heartbeat interval in seconds."""
        return self._session.heartbeat.interval

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Block until the WebSocket is open; return whether it is (``False`` after ``timeout``)."""
        self._session.opened.wait(timeout)
        return self.connected

    # Public API: listeners ----------------------------------------------------------------

    def on(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Call ``listener`` every time ``event`` fires.

        Lifecycle names (:data:`LIFECYCLE_EVENTS`) register a lifecycle listener; any other
        name listens to the server event of that name (``listener(payload)``). To listen to a
        server event whose name is a lifecycle name, use :meth:`on_server_event`. When the server
        asks for an answer (a server request), a listener that accepts a second positional
        argument gets ``reply``: ``reply(data)`` answers once and returns whether it was sent
        (see :mod:`crossws_sync.client.replies`).

        Raises:
            TypeError: ``event`` is not a non-empty string or ``listener`` is not callable.
        """
        self._registry_for(event).on(event, listener, tag)

    def once(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Like :meth:`on`, but the registration is removed after its first call."""
        self._registry_for(event).on(event, listener, tag, once=True)

    def off(self, event: str, listener_or_tag: Any = _ALL) -> None:
        """Remove every listener of ``event``, or the ones equal to a function, or with a tag."""
        self._remove(self._registry_for(event), event, listener_or_tag)

    def on_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Listen to the server-pushed event ``event``, even if it is named like a lifecycle event."""
        self._session.server_events.on(event, listener, tag)

    def once_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Like :meth:`on_server_event`, removed after its first call."""
        self._session.server_events.on(event, listener, tag, once=True)

    def off_server_event(self, event: str, listener_or_tag: Any = _ALL) -> None:
        """Remove server-event listeners registered with :meth:`on_server_event` (or :meth:`on`)."""
        self._remove(self._session.server_events, event, listener_or_tag)

    def _registry_for(self, event: str) -> ListenerRegistry:
        check_event_name(event)
        session = self._session
        return session.lifecycle if event in LIFECYCLE_EVENTS else session.server_events

    @staticmethod
    def _remove(registry: ListenerRegistry, event: str, listener_or_tag: Any) -> None:
        if listener_or_tag is _ALL:
            registry.off(event)
        else:
            registry.off(event, listener_or_tag)

    # Public API: sending ------------------------------------------------------------------

    def send(self, data: Union[str, bytes]) -> bool:
        """Send one raw message: a ``str`` as a text frame, ``bytes`` as a binary frame.

        Outside the JSON event protocol (the server's ``message`` event gets it). Returns whether
        it was handed to the socket (``False`` when not open).

        Raises:
            TypeError: ``data`` is neither ``str`` nor ``bytes``.
        """
        frame = frames.encode_data(data, mask=True)
        conn = self._session.open_conn()
        return conn is not None and conn.send(frame)

    def emit(
        self,
        event: str,
        data: Any,
        callback: Optional[Callable[[Optional[Result], Any], Any]] = None,
        *,
        callback_timeout: Optional[float] = None,
        on_pending: Optional[Callable[[], Any]] = None,
        pending_timeout: Optional[float] = None,
    ) -> bool:
        """Send ``event`` with ``data``; with ``callback``, ask the server for an ack.

        While a connection is on its way (connecting, or a reconnect coming) the call waits in
        the offline queue and is sent, in call order, once it opens; after :meth:`manual_close`,
        or when no attempt will come, it fails at once. ``callback(err, data)`` is called
        exactly once: ``(None, payload)`` with the server's reply, or ``(err, None)`` where
        ``err`` is a :class:`Result` with ``error`` and ``error_code``: ``WS_NOT_OPEN`` or
        ``OFFLINE_QUEUE_FULL`` (called before ``emit`` returns), ``CALLBACK_TIMEOUT`` after
        ``callback_timeout`` seconds counted from the call (queued or not: an expired queued
        call is never sent), ``CONNECTION_CLOSED`` as soon as the connection it went out on goes
        away, ``OFFLINE_QUEUE_DROPPED`` when the queue is given up (``manual_close``, the
        reconnect attempts end). A queued fire-and-forget emit expires unsent after the
        client's ``callback_timeout``; beyond ``offline_queue_size`` it is dropped (logged).
        ``on_pending()`` fires once after ``pending_timeout`` seconds if no reply came yet (only
        when ``pending_timeout < callback_timeout``).

        Args:
            event: event name (non-empty string).
            data: any JSON-serialisable value except ``None``.
            callback: ``callback(err, data)``; ``None`` for fire-and-forget.
            callback_timeout: ack timeout in seconds (default: the client's option).
            on_pending: called without arguments when the reply is slow.
            pending_timeout: seconds before ``on_pending`` (default: the client's option).

        Returns:
            Whether the frame was handed to the socket now: ``False`` when it was queued (see
            :attr:`queued`) or failed.

        Raises:
            TypeError: bad ``event``, ``callback`` or ``on_pending``, or ``data`` not JSON.
            ConfigError: ``data`` is ``None`` or a timeout is not a positive number.
        """
        check_event_name(event)
        if data is None:
            raise ConfigError("emit: data cannot be None")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be a function")
        timeouts = self._session.acks.timeouts(callback_timeout, on_pending, pending_timeout)
        if callback is None:
            frame = frames.encode_text(events.encode_event(event, data), mask=True)
            return self._session.send(frame, None, None, timeouts)
        callback_id = events.new_client_callback_id()
        frame = frames.encode_text(events.encode_request(event, data, callback_id), mask=True)
        return self._session.send(frame, PendingAck(callback_id, callback, None), on_pending, timeouts)

    def emit_with_promise(
        self,
        event: str,
        data: Any,
        *,
        callback_timeout: Optional[float] = None,
        on_pending: Optional[Callable[[], Any]] = None,
        pending_timeout: Optional[float] = None,
    ) -> gevent.event.AsyncResult:
        """Send ``event`` with an ack request; return an ``AsyncResult`` that never raises.

        It resolves to a :class:`Result`: ``success=True, data=<reply payload>``, or
        ``success=False`` with ``error`` and ``error_code`` (``WS_NOT_OPEN``,
        ``OFFLINE_QUEUE_FULL``, ``CALLBACK_TIMEOUT``, ``CONNECTION_CLOSED``,
        ``OFFLINE_QUEUE_DROPPED``, ``INVALID_ARGUMENT``). Options as in :meth:`emit`. Call
        ``.get()`` on it to block, or use :meth:`emit_and_wait`.

        While the connector is connecting (a first connection or a reconnect coming), the
        request waits in the offline queue instead of failing at once with ``WS_NOT_OPEN``;
        ``callback_timeout``, counted from the call, bounds the whole wait for the reply. After
        :meth:`manual_close` (or with no attempt coming, or ``offline_queue_size=0``) it fails
        at once.
        """
        promise = gevent.event.AsyncResult()
        try:
            if not isinstance(event, str) or not event:
                raise ConfigError("No event provided in emitWithPromise")
            if data is None:
                raise ConfigError("Data cannot be null or undefined")
            timeouts = self._session.acks.timeouts(callback_timeout, on_pending, pending_timeout)
            callback_id = events.new_client_callback_id()
            frame = frames.encode_text(events.encode_request(event, data, callback_id), mask=True)
        except (ConfigError, TypeError, ValueError) as exc:
            promise.set(Result(success=False, error=str(exc), error_code=INVALID_ARGUMENT))
            return promise
        self._session.send(frame, PendingAck(callback_id, None, promise), on_pending, timeouts)
        return promise

    def emit_and_wait(
        self,
        event: str,
        data: Any,
        *,
        callback_timeout: Optional[float] = None,
        on_pending: Optional[Callable[[], Any]] = None,
        pending_timeout: Optional[float] = None,
    ) -> Result:
        """Blocking form of :meth:`emit_with_promise`: return its :class:`Result`.

        Safe inside listeners: replies are read by the connection's own greenlet.
        """
        result: Result = self.emit_with_promise(event, data, callback_timeout=callback_timeout,
                                                on_pending=on_pending, pending_timeout=pending_timeout).get()
        return result

    # Public API: connection control -------------------------------------------------------

    def connect(self) -> None:
        """Open a connection in the background, also after :meth:`manual_close`.

        No-op while connecting or open. Cancels a scheduled reconnect attempt and resets
        :attr:`repeat`.
        """
        self._session.connect()

    def reconnect(self, repeat_reset: bool = False) -> None:
        """Schedule a reconnect attempt exactly like the original.

        With ``repeat_reset`` counts attempts from zero again. Does
        nothing when an attempt is already scheduled or after :meth:`manual_close`. Fires
        ``repeat-limit`` instead when ``repeat_limit`` attempts were made. Otherwise closes the
        current connection (code 4001, no local ``close`` event, pending acks fail with
        ``CONNECTION_CLOSED``), fires ``reconnect`` with ``{repeat, timeout}`` and connects
        again after ``timeout`` seconds.
        """
        self._session.reconnect(repeat_reset)

    def set_ping_interval(self, new_interval: float, immediate: bool = False) -> None:
        """Change the heartbeat interval; with ``immediate``, restart the heartbeat now (if open).

        Raises:
            ConfigError: ``new_interval`` is not a positive number.
        """
        heartbeat = self._session.heartbeat
        heartbeat.interval = positive_number("ping_interval", new_interval, finite=True)
        conn = self._session.open_conn()
        if immediate and conn is not None:
            heartbeat.start(conn)

    def manual_close(self) -> None:
        """Close for good: no reconnection until :meth:`connect`.

        Stops timers, cancels a connection attempt in flight, closes an open connection with
        4001 ``client manual close`` and fires the local ``close`` event with that code (only
        when a connection was open; a connection already closing, e.g. after a pong timeout,
        reports its own ``close``). Pending acks fail with ``CONNECTION_CLOSED``, queued calls
        with ``OFFLINE_QUEUE_DROPPED``. Idempotent, and safe to call from a ``close`` listener.
        """
        self._session.manual_close()

    def close(self) -> None:
        """Alias of :meth:`manual_close`."""
        self.manual_close()


__all__ = [
    "WebSocketConnector",
    "LIFECYCLE_EVENTS",
    "WS_NOT_OPEN",
    "CALLBACK_TIMEOUT",
    "CONNECTION_CLOSED",
    "INVALID_ARGUMENT",
    "OFFLINE_QUEUE_FULL",
    "OFFLINE_QUEUE_DROPPED",
    "build_connect_url",  # re-exported from ..wire.url
    "js_string",  # re-exported from ..wire.url
]
