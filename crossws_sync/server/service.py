"""The local WebSocket service: upgrades, connections, event dispatch, liveness sweep.

It knows nothing of Redis or rooms; the adapter facade composes it with the room registry and
the bus. Client frames are dispatched to a registry of *client events* that is separate from
the registry of *system events* (``connection``, ``close``...), so a frame such as
``{"event": "connection"}`` can never run a system listener.
"""
from __future__ import annotations

import logging
import random
import socket as _stdsocket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import gevent

from ..wire import frames
from .connection import ConnectionHandler, WebSocketConnection
from ..config import positive_int, positive_number
from ..wire.deflate import DeflateOptions, PerMessageDeflate, negotiate, options_from
from ..errors import ConfigError, ProtocolError
from ..wire.handshake import accept_headers, check_request
from ..core.admission import AcceptBucket, retry_after_seconds
from ..core.listeners import ListenerRegistry
from ..wire.recovery import RECOVER_EVENT, RECOVER_PARAM
from ..wire.events import MISSING, decode_client_message, encode_ack, encode_ack_bytes
from ..wire.frames import encode_text_bytes
from ..wire.request import Request
from ..wire.retry import RESTART_CODE, with_retry_hint
from ..io.supervisor import supervise

logger = logging.getLogger("crossws_sync.server")

#: Server-side system events: these names never come from client frames.
SYSTEM_EVENTS = frozenset(
    {"connection", "close", "error", "pong", "message", "client-ping", "server-error", "listening", "ws-server-close"}
)


#: Clients handled by the liveness sweep between two yields to the hub.
SWEEP_BATCH = 256

#: Why an upgrade was refused (the keys of :attr:`WebSocketService.rejections`).
REJECT_REASONS = ("bad_handshake", "shutting_down", "rate_limited", "too_many_connections", "origin", "auth_refused",
                  "auth_error")
#: Per-connection traffic counters (attributes of :class:`WebSocketConnection`).
TRAFFIC_KEYS = ("messages_received", "bytes_received", "messages_sent", "bytes_sent")
#: How many of the latest slow-consumer closes :attr:`WebSocketService.slow_consumer_log` keeps.
SLOW_CONSUMER_LOG_SIZE = 20

class Reject(Exception):
    """Raise (or return) from the ``authenticate`` hook to refuse an upgrade with an HTTP status.

    Args:
        status: HTTP status code (401, 403, 429...).
        body: response body text.
        headers: extra response headers.
    """

    def __init__(self, status: int = 401, body: str = "", headers: Optional[Sequence[Tuple[str, str]]] = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = list(headers or [])


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 426: "Upgrade Required",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


#: ``allowed_origins`` value of the default policy: an ``Origin`` must name the request's ``Host``.
SAME_ORIGIN = ("same-origin",)
_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def parse_allowed_origins(value: Union[None, str, Iterable[str]]) -> Optional[Tuple[str, ...]]:
    """The ``allowed_origins`` option as settings: ``None`` (any), :data:`SAME_ORIGIN` or a tuple.

    Raises:
        ConfigError: not ``None``, ``"same-origin"``, ``"*"`` or a list of ``scheme://host[:port]``.
    """
    if value is None or value == "*":
        return None
    if value == "same-origin":
        return SAME_ORIGIN
    if isinstance(value, str):
        value = [value]
    origins = tuple(value)
    if "*" in origins:
        return None
    for origin in origins:
        if not isinstance(origin, str) or "://" not in origin:
            raise ConfigError("allowed_origins entries must look like 'https://host[:port]', got %r" % (origin,))
    return tuple(o.rstrip("/").lower() for o in origins)


def _host_port(scheme: str, netloc: str) -> str:
    netloc = netloc.lower()
    host, sep, port = netloc.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        if port == _DEFAULT_PORTS.get(scheme):
            return host
        return netloc
    return netloc


def origin_allowed(origin: str, host: str, allowed: Tuple[str, ...]) -> bool:
    """Whether a request's ``Origin`` passes ``allowed`` (``SAME_ORIGIN`` or a tuple of origins)."""
    if allowed is SAME_ORIGIN or allowed == SAME_ORIGIN:
        scheme, sep, rest = origin.partition("://")
        if not sep or not host:
            return False
        scheme = scheme.lower()
        request_scheme = "https" if scheme in ("https", "wss") else "http"
        return _host_port(scheme, rest.split("/", 1)[0]) == _host_port(request_scheme, host)
    return origin.rstrip("/").lower() in allowed


@dataclass(frozen=True)
class WebSocketSettings:
    """Validated WebSocket options (see the adapter's constructor for their meaning)."""

    server_ping_interval: float = 20.0
    enter_background_close_time: float = 10.0
    heartbeat_str: str = ""
    max_message_size: Optional[int] = 1 << 20
    max_outbox_bytes: int = 4 << 20
    close_timeout: float = 5.0
    max_connections: Optional[int] = None
    #: ``None``: any origin; ``SAME_ORIGIN``: the request's own host; else the accepted origins
    allowed_origins: Optional[Tuple[str, ...]] = None
    identify_timeout: Optional[float] = None
    max_messages_per_second: Optional[float] = None
    rate_limit_burst: Optional[int] = None
    unknown_event_ack: bool = False
    per_message_deflate: Optional[DeflateOptions] = None
    #: accept-rate limit of upgrades (token bucket): upgrades per second and bucket size
    max_accept_rate: Optional[float] = None
    accept_burst: Optional[int] = None
    authenticate: Optional[Callable[[Request], Any]] = field(default=None, compare=False)

    @classmethod
    def from_options(cls, *, server_ping_interval: float, enter_background_close_time: float, heartbeat_str: Any,
                     max_message_size: Optional[int], max_outbox_bytes: int, close_timeout: float,
                     max_connections: Optional[int], allowed_origins: Union[None, str, Iterable[str]],
                     identify_timeout: Optional[float], max_messages_per_second: Optional[float],
                     rate_limit_burst: Optional[int], unknown_event_ack: bool,
                     per_message_deflate: Union[bool, Dict[str, Any], None],
                     authenticate: Optional[Callable[[Request], Any]],
                     max_accept_rate: Optional[float] = None, accept_burst: Optional[int] = None) -> "WebSocketSettings":
        """The adapter's WebSocket options, validated.

        Raises:
            ConfigError: a value out of range or of the wrong type.
        """
        return cls(
            server_ping_interval=float(positive_number("server_ping_interval", server_ping_interval) or 20.0),
            enter_background_close_time=float(positive_number("enter_background_close_time",
                                                              enter_background_close_time) or 10.0),
            heartbeat_str=heartbeat_str if isinstance(heartbeat_str, str) else str(heartbeat_str),
            max_message_size=positive_int("max_message_size", max_message_size, allow_none=True),
            max_outbox_bytes=int(positive_int("max_outbox_bytes", max_outbox_bytes) or 0),
            close_timeout=float(positive_number("close_timeout", close_timeout) or 5.0),
            max_connections=positive_int("max_connections", max_connections, allow_none=True),
            allowed_origins=parse_allowed_origins(allowed_origins),
            identify_timeout=positive_number("identify_timeout", identify_timeout, allow_none=True),
            max_messages_per_second=positive_number("max_messages_per_second", max_messages_per_second,
                                                    allow_none=True),
            rate_limit_burst=positive_int("rate_limit_burst", rate_limit_burst, allow_none=True),
            unknown_event_ack=bool(unknown_event_ack),
            per_message_deflate=options_from(per_message_deflate),
            authenticate=authenticate,
            max_accept_rate=positive_number("max_accept_rate", max_accept_rate, allow_none=True, finite=True),
            accept_burst=positive_int("accept_burst", accept_burst, allow_none=True),
        )


class _RateLimiter:
    """Token bucket per connection, stored on the connection (no greenlet, no timer)."""

    __slots__ = ("rate", "burst")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst

    def allow(self, conn: WebSocketConnection) -> bool:
        now = time.monotonic()
        tokens, stamp = getattr(conn, "_rate_state", (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            conn._rate_state = (tokens, now)  # type: ignore[attr-defined]
            return False
        conn._rate_state = (tokens - 1.0, now)  # type: ignore[attr-defined]
        return True


def _log_budget(conn: WebSocketConnection) -> bool:
    """Per-connection log rate limit: log the 1st, 10th, 100th... problem of a connection."""
    count = getattr(conn, "_problems", 0) + 1
    conn._problems = count  # type: ignore[attr-defined]
    return count in (1, 10, 100, 1000, 10000) or count % 100000 == 0


class WebSocketService(ConnectionHandler):
    """Accepts upgrades, tracks connections, dispatches events, runs the liveness sweep.

    Attributes:
        clients: the set of open connections (like ``wss.clients``).
        system_events: listeners of system events.
        client_events: listeners of events sent by clients.
    """

    def __init__(self, settings: WebSocketSettings, *, on_closed: Optional[Callable[[WebSocketConnection, int, str], None]] = None) -> None:
        self.settings = settings
        self.clients: Set[WebSocketConnection] = set()
        self.system_events = ListenerRegistry(logger, self._count_handler_error)
        self.client_events = ListenerRegistry(logger, self._count_handler_error)
        self._on_closed = on_closed
        #: ``on_answer(conn, ack_id, payload) -> settled``: a client answered a server request
        #: (``{"ackId","payload"}``, see :mod:`crossws_sync.cluster.asks`); ``None``: ignored
        self.on_answer: Optional[Callable[[WebSocketConnection, str, Any], bool]] = None
        self._heartbeat_frame = frames.encode_text(settings.heartbeat_str)
        self._limiter = (
            _RateLimiter(settings.max_messages_per_second, settings.rate_limit_burst or max(1, int(settings.max_messages_per_second * 2)))
            if settings.max_messages_per_second
            else None
        )
        #: the accept-rate limit of upgrades (``max_accept_rate``), ``None`` when off
        self.accept_bucket: Optional[AcceptBucket] = (
            AcceptBucket(settings.max_accept_rate, settings.accept_burst or max(1, int(settings.max_accept_rate)))
            if settings.max_accept_rate else None)
        #: uniform floats in [0, 1) for the jittered retry hints (replaceable in tests)
        self.random: Callable[[], float] = random.random
        self._sweeper: Optional[gevent.Greenlet] = None
        self._identify_checker: Optional[gevent.Greenlet] = None
        self._accepting = True
        #: greenlet -> the connection whose close listeners it is running
        self.closing: Dict[Any, WebSocketConnection] = {}
        self.stats: Dict[str, int] = {"rejected_upgrades": 0, "bad_frames": 0, "unknown_events": 0, "rate_limited": 0,
                                      "handler_errors": 0, "rate_limited_upgrades": 0}
        #: counters read by the metrics collector at scrape time (plain ints: the hot paths
        #: pay one addition); upgrades accepted, refused by :data:`REJECT_REASONS`, closes by code
        self.accepted = 0
        self.rejections: Dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.closes: Dict[int, int] = {}
        self.slow_consumer_closes = 0
        #: the latest slow-consumer closes, newest last (for the dashboard): ``{"at": epoch seconds,
        #: "socket_id", "code", "connected_seconds", "messages_sent", "bytes_sent"}``
        self.slow_consumer_log: Deque[Dict[str, Any]] = deque(maxlen=SLOW_CONSUMER_LOG_SIZE)
        #: traffic of the connections already closed (open ones keep their own counts)
        self.closed_traffic: Dict[str, int] = dict.fromkeys(TRAFFIC_KEYS, 0)
        #: broadcasts to every local client, and the seconds spent writing them
        self.fanouts = 0
        self.fanout_seconds = 0.0
        #: liveness sweeps completed; the last one's wall time in seconds (its yields to the hub
        #: included), the process CPU seconds spent meanwhile (what the greenlets served during
        #: its yields did included: on a shared machine the wall time also counts other
        #: processes) and how many clients it went through
        self.sweeps = 0
        self.last_sweep_seconds = 0.0
        self.last_sweep_cpu_seconds = 0.0
        self.last_sweep_clients = 0
        #: connection state recovery, when on: ``recover(conn, request payload or None)``, and
        #: how long the first message of a resuming client is awaited
        self.recover: Optional[Callable[[WebSocketConnection, Any], None]] = None
        self.recovery_wait = 5.0

    def _count_handler_error(self, event: str, exc: BaseException) -> None:
        self.stats["handler_errors"] += 1

    # Lifecycle ---------------------------------------------------------------------------

    def start_background(self) -> None:
        """Start the shared liveness sweep (and the identify deadline check when configured)."""
        if self._sweeper is None:
            self._sweeper = gevent.spawn(supervise, self._sweep_loop, "liveness sweep", logger, backoff=1.0)
        if self.settings.identify_timeout and self._identify_checker is None:
            self._identify_checker = gevent.spawn(supervise, self._identify_loop, "identify deadline", logger, backoff=1.0)

    def stop_background(self) -> None:
        for greenlet in (self._sweeper, self._identify_checker):
            if greenlet is not None:
                greenlet.kill(block=False)
        self._sweeper = self._identify_checker = None

    def close_all(self, code: int = 1001, reason: str = "server shutdown", timeout: float = 5.0,
                  retry_window: Optional[float] = None) -> None:
        """Stop accepting, send every client a close frame, and wait (bounded) until all are gone.

        With ``code`` 1012 (Service Restart) and a ``retry_window`` (seconds), each client's
        reason ends with its own retry hint (``retry=<s>s``, uniform in ``[0, retry_window]``;
        see :mod:`crossws_sync.wire.retry`), so the clients that honour it come back spread
        over the window instead of all at once.
        """
        self._accepting = False
        hinted = code == RESTART_CODE and bool(retry_window)
        for conn in list(self.clients):
            conn.close(code, with_retry_hint(reason, self.random() * float(retry_window or 0)) if hinted else reason)
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for conn in list(self.clients):
            conn.terminate()

    def _sweep_loop(self) -> None:
        while True:
            gevent.sleep(self.settings.server_ping_interval)
            self.sweep_once(time.time())

    def sweep_once(self, now: float) -> None:
        """One liveness pass: drop clients that missed the last ping or sat in the background too
        long, ping the others. Yields every :data:`SWEEP_BATCH` clients, so other clients are
        served while tens of thousands are swept. Records its duration in
        :attr:`last_sweep_seconds`, :attr:`last_sweep_cpu_seconds` and :attr:`last_sweep_clients`,
        then counts it in :attr:`sweeps`."""
        started, started_cpu = time.perf_counter(), time.process_time()
        background_limit = self.settings.enter_background_close_time
        swept = list(self.clients)
        for index, conn in enumerate(swept, 1):
            background = conn.enter_background_time
            if background and now - (background / 1000.0 if background > 1e11 else background) > background_limit:
                conn.terminate()
            elif not conn.is_alive:
                conn.terminate()
            else:
                conn.is_alive = False
                conn.ping()
            if index % SWEEP_BATCH == 0:
                gevent.sleep(0)
        self.last_sweep_seconds = time.perf_counter() - started
        self.last_sweep_cpu_seconds = time.process_time() - started_cpu
        self.last_sweep_clients = len(swept)
        self.sweeps += 1

    def _identify_loop(self) -> None:
        limit = float(self.settings.identify_timeout or 0)
        interval = min(1.0, limit / 2)
        while True:
            gevent.sleep(interval)
            now = time.monotonic()
            for conn in list(self.clients):
                if conn.socket_id is None and conn.open and now - conn.connected_at > limit:
                    conn.close(4011, "identify timeout")

    # WSGI upgrade ------------------------------------------------------------------------

    def handle_upgrade(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        """WSGI application body for a WebSocket upgrade request (auth before the 101)."""
        request = Request(environ)
        legacy_ws = environ.get("wsgi.websocket")  # gevent-websocket's handler already upgraded
        if legacy_ws is None:
            problem = check_request(environ)
            if problem is not None:
                self.rejections["bad_handshake"] += 1
                return self._reject(start_response, problem[0], problem[1], problem[2])
        if not self._accepting:
            return self._refuse(start_response, legacy_ws, Reject(503, "server shutting down"), "shutting_down")
        bucket = self.accept_bucket
        if bucket is not None:
            # Before anything costly (the auth hook, a connection): a storm is refused cheaply.
            now = time.monotonic()
            wait = bucket.take(now)
            if wait:
                self.stats["rate_limited_upgrades"] += 1
                retry_after = retry_after_seconds(bucket.book(now, wait), 1.0, self.random)
                return self._refuse(start_response, legacy_ws, Reject(
                    503, "too many connection attempts", [("Retry-After", str(retry_after))]), "rate_limited")
        settings = self.settings
        if settings.max_connections is not None and len(self.clients) >= settings.max_connections:
            return self._refuse(start_response, legacy_ws, Reject(503, "too many connections"), "too_many_connections")
        if settings.allowed_origins is not None:
            origin = environ.get("HTTP_ORIGIN")
            if origin is not None and not origin_allowed(origin, environ.get("HTTP_HOST", ""), settings.allowed_origins):
                return self._refuse(start_response, legacy_ws, Reject(403, "origin not allowed"), "origin")
        identity = None
        if settings.authenticate is not None:
            try:
                identity = settings.authenticate(request)
            except Reject as rejection:
                return self._refuse(start_response, legacy_ws, rejection, "auth_refused")
            except Exception:
                logger.exception("authenticate hook raised; refusing the upgrade")
                return self._refuse(start_response, legacy_ws, Reject(500, "authentication error"), "auth_error")
            if isinstance(identity, Reject):
                return self._refuse(start_response, legacy_ws, identity, "auth_refused")
            if identity is False:
                return self._refuse(start_response, legacy_ws, Reject(401, "unauthorized"), "auth_refused")
            if identity is True:
                identity = None
        if settings.max_connections is not None and len(self.clients) >= settings.max_connections:
            # again: the auth hook may have yielded while other upgrades went through
            return self._refuse(start_response, legacy_ws, Reject(503, "too many connections"), "too_many_connections")
        deflater: Optional[PerMessageDeflate] = None
        held: Optional[Callable[[], bytes]] = None
        if legacy_ws is not None:
            sock = legacy_ws.handler.socket
        else:
            sock = environ.get("crossws.socket") or environ.get("gunicorn.sock")
            if sock is None:
                logger.error("no raw socket in the WSGI environ: serve with crossws_sync's handler or worker")
                return self._reject(start_response, 500, "WebSocket needs crossws_sync's WSGI handler", [])
            offers = environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS")
            agreement = None
            if settings.per_message_deflate is not None and offers:
                agreement = negotiate(offers, settings.per_message_deflate)
                if agreement is not None:
                    deflater = PerMessageDeflate(agreement, True, settings.per_message_deflate,
                                                 settings.max_message_size)
            headers = accept_headers(environ, agreement.header() if agreement is not None else None)
            _no_delay(sock)
            write = start_response("101 Switching Protocols", headers)
            # The standalone accept path hands the response's bytes over instead of writing them:
            # the connection sends them with its first frames (see WebSocketConnection._write_first).
            held = environ.get("crossws.hold_response")
            if held is None:
                write(b"")
            # The HTTP reader and its 8 KiB buffer are not needed any more (frames are read from
            # the socket); closing it also ends pywsgi's keep-alive loop once we return.
            _close_quietly(getattr(environ.get("wsgi.input"), "rfile", None))
        detach = environ.get("crossws.detach") if legacy_ws is None else None
        detached = detach() if detach is not None else None
        if detached is not None:
            sock = detached
            request.slim()
        conn = WebSocketConnection(
            sock, request, self,
            max_message_size=settings.max_message_size,
            max_outbox_bytes=settings.max_outbox_bytes,
            close_timeout=settings.close_timeout,
            identity=identity,
            deflate=deflater,
        )
        if held is not None:
            conn._write_first(held())
        # Counted at once (nothing above yields after the check): concurrent upgrades cannot
        # all pass the max_connections check before any of them is counted.
        self.clients.add(conn)
        self.accepted += 1
        if detached is not None:
            # The connection handlers run here; then reads are served from the event loop (no
            # greenlet while the client is idle) and this WSGI handler returns and is freed.
            self._opened(conn)
            if not conn.start_reading():
                gevent.spawn(conn.run)
        else:
            self._opened(conn)
            conn.run()  # TLS, gevent-websocket: this greenlet reads until the connection ends
        return []

    def _opened(self, conn: WebSocketConnection) -> None:
        recover = self.recover
        if recover is not None and RECOVER_PARAM + "=" in conn.request.query_string:
            # The client asks to resume a session: its request is its first message; the
            # application's connection handler runs once the recovery is decided.
            conn.awaiting_recovery = gevent.spawn_later(self.recovery_wait, self._recovery_timed_out, conn)
        else:
            self.system_events.emit("connection", conn, conn.request)

    def _recovery_timed_out(self, conn: WebSocketConnection) -> None:
        if conn.awaiting_recovery is not None and self.recover is not None:
            conn.awaiting_recovery = None
            self.recover(conn, None)
            self.system_events.emit("connection", conn, conn.request)

    def _recovery_request(self, conn: WebSocketConnection, text: str) -> bool:
        """The first message of a connection that asked to resume: recover it, then run the
        application's connection handler. Returns True when ``text`` was the request itself."""
        timer, conn.awaiting_recovery = conn.awaiting_recovery, None
        if timer is not None:
            timer.kill(block=False)
        payload = None
        try:
            event, payload, _ = decode_client_message(text)
        except ProtocolError:
            event = ""
        consumed = event == RECOVER_EVENT
        if self.recover is not None:
            self.recover(conn, payload if consumed else None)
        self.system_events.emit("connection", conn, conn.request)
        return consumed

    def _refuse(self, start_response: Callable[..., Any], legacy_ws: Any, rejection: Reject, reason: str) -> List[bytes]:
        self.stats["rejected_upgrades"] += 1
        self.rejections[reason] += 1
        if legacy_ws is not None:
            # Already upgraded by gevent-websocket's handler: all we can do is close at once.
            code = 4000 + rejection.status if rejection.status < 1000 else 1008
            legacy_ws.handler.socket.sendall(frames.encode_close(code, rejection.body[:100]))
            return []
        return self._reject(start_response, rejection.status, rejection.body, rejection.headers)

    @staticmethod
    def _reject(start_response: Callable[..., Any], status: int, body: str, headers: List[Tuple[str, str]]) -> List[bytes]:
        data = body.encode("utf-8")
        start_response("%d %s" % (status, _REASONS.get(status, "Error")), [
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))), ("Connection", "close")
        ] + list(headers))
        return [data]

    # ConnectionHandler -------------------------------------------------------------------

    def on_text(self, conn: WebSocketConnection, text: str) -> None:
        self._on_message(conn, text, text)

    def on_binary(self, conn: WebSocketConnection, data: bytes) -> None:
        """A binary message: the ``message`` event gets the ``bytes``. Like the original, which
        turns every message into a string, one that holds UTF-8 text is also handled as text
        (heartbeat, JSON event)."""
        try:
            text: Optional[str] = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        self._on_message(conn, text, bytes(data))

    def _on_message(self, conn: WebSocketConnection, text: Optional[str], message: Union[str, bytes]) -> None:
        if self._limiter is not None and not self._limiter.allow(conn):
            self.stats["rate_limited"] += 1
            if _log_budget(conn):
                logger.warning("rate limit: dropping messages from %r", conn)
            return
        system = self.system_events
        if text is None:
            pass
        elif text == self.settings.heartbeat_str:
            system.emit("client-ping", conn)
            conn.send_frame(self._heartbeat_frame)
        else:
            self._dispatch(conn, text)
        if system.has("message"):
            system.emit("message", conn, message)

    def _dispatch(self, conn: WebSocketConnection, text: str) -> None:
        if conn.awaiting_recovery is not None and self._recovery_request(conn, text):
            return
        try:
            event, payload, callback_id = decode_client_message(text)
        except ProtocolError as exc:
            self.stats["bad_frames"] += 1
            if _log_budget(conn):
                logger.warning("bad frame from %r: %s", conn, exc)
            return
        if event is None:  # an answer to a server request; callback_id is its ackId
            on_answer = self.on_answer
            settled = on_answer is not None and callback_id is not None and on_answer(conn, callback_id, payload)
            if not settled and _log_budget(conn):
                logger.info("answer %r from %r matches no request sent on that connection", str(callback_id)[:64], conn)
            return
        callback = _make_ack(conn, callback_id) if callback_id is not None else None
        if self.client_events.emit(event, conn, None if payload is MISSING else payload, callback):
            return
        # No listener: one dict lookup for the common case, this branch for the rare one.
        self.stats["unknown_events"] += 1
        if _log_budget(conn):
            logger.info("unknown event %r from %r", event[:64], conn)
        if callback_id is not None and self.settings.unknown_event_ack:
            conn.send(encode_ack(callback_id, {"error": "unknown event", "errorCode": "UNKNOWN_EVENT"}))

    def on_pong(self, conn: WebSocketConnection, data: bytes) -> None:
        if self.system_events.has("pong"):
            self.system_events.emit("pong", conn, conn.request, data)

    def on_error(self, conn: WebSocketConnection, error: Exception) -> None:
        self.stats["bad_frames"] += 1
        if _log_budget(conn):
            logger.warning("protocol problem on %r: %s", conn, error)
        self.system_events.emit("error", conn, conn.request, error)

    def on_close(self, conn: WebSocketConnection, code: int, reason: str) -> None:
        self.clients.discard(conn)
        self.closes[code] = self.closes.get(code, 0) + 1
        if conn.slow_consumer:
            self.slow_consumer_closes += 1
            self.slow_consumer_log.append({
                "at": time.time(), "socket_id": conn.socket_id, "code": code,
                "connected_seconds": round(time.monotonic() - conn.connected_at, 3),
                "messages_sent": conn.messages_sent, "bytes_sent": conn.bytes_sent})
        totals = self.closed_traffic
        totals["messages_received"] += conn.messages_received
        totals["bytes_received"] += conn.bytes_received
        totals["messages_sent"] += conn.messages_sent
        totals["bytes_sent"] += conn.bytes_sent
        timer, conn.awaiting_recovery = conn.awaiting_recovery, None
        if timer is not None:
            timer.kill(block=False)
        current = gevent.getcurrent()
        # While close listeners run, remember which connection is closing in this greenlet, so
        # remove_user_socket() can tell a late close of an old socket from the live mapping.
        self.closing[current] = conn
        try:
            self.system_events.emit("close", conn, conn.request, code, reason)
            if self._on_closed is not None:
                self._on_closed(conn, code, reason)
        finally:
            self.closing.pop(current, None)

    # Local delivery ----------------------------------------------------------------------

    def send_to_all(self, frame: bytes) -> int:
        """Write one pre-encoded frame to every open client; return how many took it."""
        sent = 0
        started = time.perf_counter()
        # send_frame never yields, so the set cannot change while we iterate it.
        for conn in self.clients:
            if conn.send_frame(frame):
                sent += 1
        self.fanout_seconds += time.perf_counter() - started
        self.fanouts += 1
        return sent

    def traffic(self) -> Dict[str, int]:
        """Data messages and frame bytes received and sent since start, open and closed
        connections together (sums the open ones: call it at scrape time, not per message)."""
        totals = dict(self.closed_traffic)
        for conn in list(self.clients):
            totals["messages_received"] += conn.messages_received
            totals["bytes_received"] += conn.bytes_received
            totals["messages_sent"] += conn.messages_sent
            totals["bytes_sent"] += conn.bytes_sent
        return totals

    def outbox_bytes(self) -> int:
        """Bytes waiting in the outboxes of the open connections (slow readers)."""
        return sum(conn.buffered_amount for conn in list(self.clients))


def _no_delay(sock: Any) -> None:
    """TCP_NODELAY on a WebSocket's TCP socket: the writes are ours to coalesce (one ``send`` per
    batch of frames), and Nagle's algorithm would hold the first frame after the 101 until the
    client acknowledged the 101 (up to a delayed-ACK timeout). Unix sockets are left alone."""
    try:
        if sock.family in (_stdsocket.AF_INET, _stdsocket.AF_INET6):
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def _close_quietly(stream: Any) -> None:
    if stream is not None:
        try:
            stream.close()
        except (OSError, ValueError):
            pass


def _make_ack(conn: WebSocketConnection, callback_id: str) -> Callable[..., bool]:
    def callback(data: Any = MISSING) -> bool:
        """Send the ack frame for this request; False when the socket is no longer open."""
        # send_frame() returns False itself when the socket is no longer open
        return conn.send_frame(encode_text_bytes(encode_ack_bytes(callback_id, data)))

    return callback
