"""WebSocketConnector: the Python client of the original's wire protocol, on gevent.

Blocking style: ``emit_and_wait`` blocks the calling greenlet, everything else returns at once.
Per connection there is one greenlet that connects, performs the HTTP upgrade and then reads
frames; writes go through one lock per connection (single writer discipline), so any number of
greenlets may emit at once. User code (listeners, ack callbacks, ``on_pending``) never runs in
the reading greenlet: it runs, in arrival order, on one *event greenlet* per client, so a
listener may block (even in ``emit_and_wait``) without stalling the heartbeat or the acks.
The pure parts live elsewhere: the query string in :mod:`.upgrade`, the opening handshake in
:mod:`.handshake`, the WebSocket protocol (shared with the server) in :mod:`.websocket`, the
reconnect schedule in :mod:`.backoff`, JSON frames in :mod:`.protocol`.

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
* optional automatic reconnection on close (``auto_reconnect``).
"""
from __future__ import annotations

import logging
import math
import socket as _stdsocket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, FrozenSet, Hashable, Iterable, List, Mapping, Optional, Tuple, Union

import gevent
import gevent.event
import gevent.lock
import gevent.socket
import gevent.ssl

from ..wire import frames

from ..wire import events
from ..wire.deflate import DeflateOptions, PerMessageDeflate, accept, client_offer, options_from
from ..core.backoff import reconnect_delay
from ..errors import ConfigError, ConnectTimeoutError, HandshakeError
from ..core.listeners import ListenerRegistry, check_event_name
from ..wire.handshake import MAX_HANDSHAKE_BYTES, check_handshake_response, handshake_request
from ..io.sockets import SocketIO
from ..results import Result
from ..wire.url import Target, build_connect_url, header_pairs, js_string, parse_ws_url
from ..wire.websocket import BINARY, CLOSED, CLOSING, CONNECTING, OPEN, PING, TEXT, WebSocketProtocol

logger = logging.getLogger("crossws_sync.client")

#: Events the client itself fires; everything else registered with ``on`` is a server event.
LIFECYCLE_EVENTS: FrozenSet[str] = frozenset(
    {"open", "close", "error", "message", "ping", "pong", "pong-timeout", "reconnect", "repeat-limit"}
)

WS_NOT_OPEN = "WS_NOT_OPEN"
CALLBACK_TIMEOUT = "CALLBACK_TIMEOUT"
CONNECTION_CLOSED = "CONNECTION_CLOSED"
INVALID_ARGUMENT = "INVALID_ARGUMENT"

MANUAL_CLOSE_CODE = 4001
MANUAL_CLOSE_REASON = "client manual close"
PONG_TIMEOUT_CODE = 4002
PONG_TIMEOUT_REASON = "pong timeout"

#: Largest message accepted from the server (the original's ``ws`` allows 100 MiB).
MAX_MESSAGE_SIZE = 64 << 20
_RECV_SIZE = 65536

_ALL: Any = object()


# Option validation --------------------------------------------------------------------------


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError("%s must be a positive number of seconds, got %r" % (name, value))
    return float(value)


def _count(name: str, value: Any, *, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError("%s must be a non-negative integer, got %r" % (name, value))
    return value


@dataclass(frozen=True)
class _Config:
    url: str
    target: Target
    pong_timeout: float
    fast_reconnect_threshold: int
    fast_reconnect_interval: float
    reconnect_max_interval: float
    ping_msg: str
    callback_timeout: float
    repeat_limit: Optional[int]
    pending_timeout: float
    connect_timeout: float
    auto_reconnect: bool
    no_reconnect_codes: FrozenSet[int]
    headers: Tuple[Tuple[str, str], ...]
    per_message_deflate: Optional[DeflateOptions]
    ssl_context: Optional[gevent.ssl.SSLContext]


# Helpers of the client: event greenlet, acks, heartbeat ---------------------------------------


def _call_user(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # user code: log, never break the client
        logger.exception("client callback %r raised", fn)


class _EventQueue:
    """Runs queued calls in order on one greenlet, started on demand and gone when idle.

    All user code of a client (listeners, ack callbacks, ``on_pending``) goes through it, so
    the connection's reading greenlet never runs user code.
    """

    def __init__(self) -> None:
        self._queue: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = deque()
        self._greenlet: Optional[gevent.Greenlet] = None

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``."""
        self._queue.append((fn, args))
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        queue = self._queue
        try:
            while queue:
                fn, args = queue.popleft()
                try:
                    fn(*args)
                except Exception:
                    logger.exception("client event handler failed")
        finally:
            self._greenlet = None


class _PendingAck:
    __slots__ = ("callback_id", "callback", "result", "timeout_timer", "pending_timer", "done")

    def __init__(self, callback_id: str, callback: Optional[Callable[..., Any]],
                 result: Optional[gevent.event.AsyncResult]) -> None:
        self.callback_id = callback_id
        self.callback = callback
        self.result = result
        self.timeout_timer: Any = None  # gevent loop timers: no greenlet per pending ack
        self.pending_timer: Any = None
        self.done = False


class _Acks:
    """Pending acks of a client's connections: timeouts, ``on_pending``, settling exactly once.

    Entries live in ``conn.pending`` (a reply can only come on the connection the request
    went out on). Promises are resolved directly, so a listener blocked in ``emit_and_wait``
    is woken even while the event greenlet is busy; callbacks run on the event greenlet.
    """

    def __init__(self, queue: _EventQueue) -> None:
        self._events = queue

    def register(self, conn: "_Connection", entry: _PendingAck, on_pending: Optional[Callable[[], Any]],
                 ack_timeout: float, pending_timeout: float) -> None:
        conn.pending[entry.callback_id] = entry
        # Loop timers run their callback in the hub: _timed_out only resolves or posts (never
        # blocks), and on_pending is posted to the event greenlet.
        loop = gevent.get_hub().loop
        entry.timeout_timer = loop.timer(ack_timeout)
        entry.timeout_timer.start(self._timed_out, conn, entry)
        if on_pending is not None and pending_timeout < ack_timeout:
            entry.pending_timer = loop.timer(pending_timeout)
            entry.pending_timer.start(self._events.post, self._run_pending, entry, on_pending)

    def resolve(self, conn: "_Connection", callback_id: str, payload: Any) -> None:
        entry = conn.pending.pop(callback_id, None)
        if entry is not None:  # unknown or late ids are ignored
            self._settle(entry, None, payload)

    def fail_all(self, conn: "_Connection") -> None:
        entries = list(conn.pending.values())
        conn.pending.clear()
        for entry in entries:
            self._settle(entry, Result(error="Connection closed before the reply: " + entry.callback_id,
                                       error_code=CONNECTION_CLOSED), None)

    def _timed_out(self, conn: "_Connection", entry: _PendingAck) -> None:
        if conn.pending.pop(entry.callback_id, None) is None:
            return
        prefix = "Is promise callback timeout: " if entry.result is not None else "Is callback timeout: "
        self._settle(entry, Result(error=prefix + entry.callback_id, error_code=CALLBACK_TIMEOUT), None)

    @staticmethod
    def _run_pending(entry: _PendingAck, on_pending: Callable[[], Any]) -> None:
        if not entry.done:  # never after the reply
            _call_user(on_pending)

    def _settle(self, entry: _PendingAck, error: Optional[Result], payload: Any) -> None:
        if entry.done:
            return
        entry.done = True
        for timer in (entry.timeout_timer, entry.pending_timer):
            if timer is not None:
                timer.close()
        entry.timeout_timer = entry.pending_timer = None
        if entry.result is not None:
            if error is None:
                entry.result.set(Result(success=True, data=payload))
            else:
                entry.result.set(Result(success=False, error=error.error, error_code=error.error_code))
        elif entry.callback is not None:
            self._events.post(_call_user, entry.callback, error, None if error is not None else payload)


class _Heartbeat:
    """The client heartbeat of the original's connector for the current connection.

    ``ping_interval`` after open or the last pong: fire ``ping``, send ``ping_msg``; its echo
    fires ``pong(latency)`` and re-arms; no echo within ``pong_timeout`` fires
    ``pong-timeout`` and closes with 4002. Only the echo of an outstanding ping counts.
    """

    def __init__(self, interval: float, config: _Config, fire: Callable[..., None]) -> None:
        self.interval = interval
        self.latency: Optional[float] = None
        self._config = config
        self._fire = fire
        self._ping_timer: Optional[gevent.Greenlet] = None
        self._pong_timer: Optional[gevent.Greenlet] = None
        self._sent_at: Optional[float] = None

    def start(self, conn: "_Connection") -> None:
        self.stop()
        self._ping_timer = gevent.spawn_later(self.interval, self._send_ping, conn)

    def stop(self) -> None:
        self._sent_at = None
        current = gevent.getcurrent()
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None and timer is not current:
                timer.kill(block=False)
        self._ping_timer = self._pong_timer = None

    def on_text(self, conn: "_Connection", text: str) -> bool:
        """Handle ``text`` if it is the echo of the outstanding ping; return whether it was."""
        if self._sent_at is None or text != self._config.ping_msg:
            return False
        latency = time.monotonic() - self._sent_at
        self.latency = latency
        self._fire("pong", latency)
        self.start(conn)
        return True

    def _send_ping(self, conn: "_Connection") -> None:
        self._ping_timer = None
        if conn.detached or conn.state != OPEN:
            return
        self._fire("ping")
        self._sent_at = time.monotonic()
        # Armed before writing: a write stuck on a dead link still ends in pong-timeout.
        self._pong_timer = gevent.spawn_later(self._config.pong_timeout, self._pong_missing, conn)
        conn.send(frames.encode_text(self._config.ping_msg, mask=True))

    def _pong_missing(self, conn: "_Connection") -> None:
        self._pong_timer = None
        self._sent_at = None
        if conn.detached:
            return
        logger.info("no heartbeat echo from %s within %gs", self._config.url, self._config.pong_timeout)
        self._fire("pong-timeout")
        conn.start_close(PONG_TIMEOUT_CODE, PONG_TIMEOUT_REASON)


# One connection ------------------------------------------------------------------------------


class _Connection:
    """One connection attempt and, once upgraded, the WebSocket it became.

    Runs in one greenlet (:meth:`run`): connect, handshake, then read until the end. Reports to
    its owner through ``_conn_open``, ``_conn_text``, ``_conn_failed`` and ``_conn_closed``; the
    owner ignores a connection it has ``detached``.
    """

    def __init__(self, owner: "WebSocketConnector", config: _Config) -> None:
        self.owner = owner
        self.config = config
        self.state = CONNECTING
        self.detached = False
        self.sock: Optional[gevent.socket.socket] = None
        self.proto = WebSocketProtocol(client=True, max_message_size=MAX_MESSAGE_SIZE)
        self.write_lock = gevent.lock.Semaphore()
        self._raw_send: Optional[Callable[[bytes], int]] = None  # set once open (not with TLS)
        self._io: Optional[SocketIO] = None
        self.pending: Dict[str, _PendingAck] = {}
        self.greenlet: Optional[gevent.Greenlet] = None
        self._close_timer: Optional[gevent.Greenlet] = None

    # Writing

    def send(self, data: bytes) -> bool:
        """Write one encoded frame; ``False`` when the connection is not open (or just broke)."""
        if self.state != OPEN:
            return False
        if self.proto.compressing:
            data = self.proto.prepare(data)
        raw = self._raw_send
        if raw is not None and not self.write_lock.locked():
            # Nobody is writing: one non-blocking send() on the OS socket (it cannot yield, so
            # nothing can interleave); what the kernel does not take is written under the lock.
            try:
                sent = raw(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                logger.debug("write failed: %s", exc)
                self.abort()
                return False
            if sent == len(data):
                return True
            data = data[sent:]
        with self.write_lock:
            if self.state != OPEN or self.sock is None:
                return False
            return self._write(data)

    def _write(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)  # type: ignore[union-attr]
            return True
        except OSError as exc:
            logger.debug("write failed: %s", exc)
            self.abort()
            return False
        except BaseException:
            # Killed mid-frame: the stream is corrupt from here on, drop the connection.
            self.abort()
            raise

    def start_close(self, code: int, reason: str) -> None:
        """Begin the closing handshake without blocking; the socket is dropped at the latest
        ``pong_timeout`` seconds later if the server does not answer."""
        if self.state != OPEN:
            return
        self.state = CLOSING
        gevent.spawn(self._send_control, self.proto.send_close(code, reason))
        self._close_timer = gevent.spawn_later(self.config.pong_timeout, self.abort)

    def _send_control(self, frame: bytes) -> None:
        """Write a frame of the protocol's own (a close) also while closing, behind any write."""
        if not self.write_lock.acquire(timeout=self.config.pong_timeout):
            self.abort()
            return
        try:
            if self.sock is not None:
                self._write(frame)
        finally:
            self.write_lock.release()

    def abort(self) -> None:
        """Cut the TCP connection; the reading greenlet then finishes the connection."""
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(_stdsocket.SHUT_RDWR)
            except OSError:
                pass

    def cancel_attempt(self) -> None:
        """Stop a connection attempt that is still connecting (its socket is closed)."""
        if self.greenlet is not None and self.state == CONNECTING:
            self.greenlet.kill(block=False)

    # The connection's greenlet

    def run(self) -> None:
        """Connect within ``connect_timeout``, upgrade, then read until the connection ends."""
        try:
            try:
                with gevent.Timeout(self.config.connect_timeout,
                                    ConnectTimeoutError("no WebSocket connection to %s within %gs"
                                                        % (self.config.url, self.config.connect_timeout))):
                    leftover = self._open_and_upgrade()
            except Exception as exc:
                self.state = CLOSED
                self._close_socket()
                self.owner._conn_failed(self, exc)
                return
            self.state = OPEN
            self.owner._conn_open(self)
            self._read(leftover)
        finally:
            self._close_socket()

    def _open_and_upgrade(self) -> bytes:
        target = self.config.target
        last_error: Optional[Exception] = None
        infos = gevent.socket.getaddrinfo(target.host, target.port, 0, _stdsocket.SOCK_STREAM)
        for family, socktype, proto, _, address in infos:
            self.sock = gevent.socket.socket(family, socktype, proto)
            try:
                self.sock.connect(address)
                break
            except OSError as exc:
                last_error = exc
                self._close_socket()
        if self.sock is None:
            raise last_error or OSError("cannot resolve %s" % target.host)
        self.sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        if target.secure:
            context = self.config.ssl_context or gevent.ssl.create_default_context()
            self.sock = context.wrap_socket(self.sock, server_hostname=target.host)
        key = frames.new_client_key()
        headers = self.config.headers
        deflate_options = self.config.per_message_deflate
        if deflate_options is not None:
            headers = headers + (("Sec-WebSocket-Extensions", client_offer(deflate_options)),)
        self.sock.sendall(handshake_request(target.resource, target.host_header, key, headers))
        buffer: bytes = b""
        while True:
            chunk: bytes = self.sock.recv(4096)
            if not chunk:
                raise HandshakeError("connection closed during the WebSocket handshake")
            buffer += chunk
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > MAX_HANDSHAKE_BYTES:
                raise HandshakeError("oversized answer to the WebSocket upgrade")
        answer = check_handshake_response(buffer[:end], key, extensions_offered=deflate_options is not None)
        if deflate_options is not None:
            agreement = accept(answer, deflate_options)
            if agreement is not None:
                self.proto.use_deflate(PerMessageDeflate(agreement, False, deflate_options, MAX_MESSAGE_SIZE))
        return buffer[end + 4:]

    def _read(self, leftover: bytes) -> None:
        error: Optional[BaseException] = None
        reader = self._io = SocketIO(self.sock)  # waits, then reads (see sockets.py)
        self._raw_send = reader.send if not reader.tls else None
        proto = self.proto
        try:
            data = leftover
            while True:
                if data and self._handle(proto.receive_data(data)):
                    break
                data = reader.recv(_RECV_SIZE)
                if not data:
                    break
        except OSError as exc:
            error = exc
        except Exception as exc:  # a bug of ours must still end in a close event
            logger.exception("client connection reader failed")
            error = exc
        finally:
            proto.receive_eof()
            self.state = CLOSED
            if self._close_timer is not None:
                self._close_timer.kill(block=False)
        if proto.error is not None:
            error = proto.error
        self.owner._conn_closed(self, proto.close_code, proto.close_reason, proto.was_clean, error)

    def _handle(self, received: List[Any]) -> bool:
        """Dispatch the protocol's events; ``True`` once a close frame or a violation ended it."""
        proto = self.proto
        for kind, value in received:
            if kind == TEXT:
                self.owner._conn_text(self, value)
            elif kind == BINARY:
                self.owner._conn_binary(self, value)
            elif kind == PING:
                # Answered from the reader, before anything the app sends in answer to later
                # messages (RFC 6455 §5.5.2: a pong as soon as practical, in order).
                pong = proto.data_to_send()
                if not pong:
                    continue
                if self.write_lock.locked():
                    gevent.spawn(self.send, pong)  # a big write is in progress: never block the reader
                else:
                    self.send(pong)
        if proto.state != CLOSED:
            return False
        if proto.error is not None:
            logger.warning("server broke the protocol: %s", proto.error)
        answer = proto.data_to_send()
        if self.state == OPEN:
            self.state = CLOSING
            if answer:
                self._send_control(answer)
        return True

    def _close_socket(self) -> None:
        self._raw_send = None
        io, self._io = self._io, None
        sock, self.sock = self.sock, None
        if io is not None:
            io.close()
        elif sock is not None:
            try:
                sock.close()
            except OSError:
                pass


# The client ----------------------------------------------------------------------------------


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
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigError("url is required: a complete ws:// or wss:// address such as ws://127.0.0.1:9000/path")
        if custom_params is not None and not isinstance(custom_params, Mapping):
            raise ConfigError("custom_params must be a mapping (dict) or None")
        if not isinstance(ping_msg, str):
            raise ConfigError("ping_msg must be a str")
        if ssl_context is not None and not isinstance(ssl_context, gevent.ssl.SSLContext):
            raise ConfigError("ssl_context must be gevent-aware: create it after gevent.monkey.patch_all() "
                              "or with gevent.ssl.create_default_context()")
        try:
            codes = frozenset(int(code) for code in no_reconnect_codes)
        except (TypeError, ValueError):
            raise ConfigError("no_reconnect_codes must be an iterable of close codes") from None
        full_url = build_connect_url(url, custom_params)
        self._config = _Config(
            url=full_url,
            target=parse_ws_url(full_url),
            pong_timeout=_seconds("pong_timeout", pong_timeout),
            fast_reconnect_threshold=_count("fast_reconnect_threshold", fast_reconnect_threshold) or 0,
            fast_reconnect_interval=_seconds("fast_reconnect_interval", fast_reconnect_interval),
            reconnect_max_interval=_seconds("reconnect_max_interval", reconnect_max_interval),
            ping_msg=ping_msg,
            callback_timeout=_seconds("callback_timeout", callback_timeout),
            repeat_limit=_count("repeat_limit", repeat_limit, allow_none=True),
            pending_timeout=_seconds("pending_timeout", pending_timeout),
            connect_timeout=_seconds("connect_timeout", connect_timeout),
            auto_reconnect=bool(auto_reconnect),
            no_reconnect_codes=codes,
            headers=header_pairs(headers),
            ssl_context=ssl_context,
            per_message_deflate=options_from(per_message_deflate),
        )
        self._lifecycle = ListenerRegistry(logger)
        self._server_events = ListenerRegistry(logger)
        self._queue = _EventQueue()
        self._acks = _Acks(self._queue)
        self._heartbeat = _Heartbeat(_seconds("ping_interval", ping_interval), self._config, self._fire)
        self._conn: Optional[_Connection] = None
        self._opened = gevent.event.Event()
        self._repeat = 0
        self._forbid = False
        self._reconnect_timer: Optional[gevent.Greenlet] = None
        if autoconnect:
            self._open_connection()

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
        conn = self._conn
        return conn is not None and conn.state == OPEN

    @property
    def repeat(self) -> int:
        """Reconnect attempts since the last successful open (the original's ``repeat``)."""
        return self._repeat

    @property
    def latency(self) -> Optional[float]:
        """Round-trip time of the last heartbeat in seconds (monotonic clock), ``None`` before one."""
        return self._heartbeat.latency

    def reconnecting(self) -> bool:
        """``True`` from the first scheduled reconnect attempt until the next successful open."""
        return self._repeat > 0

    def get_ping_interval(self) -> float:
        """Return the heartbeat interval in seconds."""
        return self._heartbeat.interval

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Block until the WebSocket is open; return whether it is (``False`` after ``timeout``)."""
        self._opened.wait(timeout)
        return self.connected

    # Public API: listeners ----------------------------------------------------------------

    def on(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Call ``listener`` every time ``event`` fires.

        Lifecycle names (:data:`LIFECYCLE_EVENTS`) register a lifecycle listener; any other
        name listens to the server event of that name (``listener(payload)``). To listen to a
        server event whose name is a lifecycle name, use :meth:`on_server_event`.

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
        self._server_events.on(event, listener, tag)

    def once_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Like :meth:`on_server_event`, removed after its first call."""
        self._server_events.on(event, listener, tag, once=True)

    def off_server_event(self, event: str, listener_or_tag: Any = _ALL) -> None:
        """Remove server-event listeners registered with :meth:`on_server_event` (or :meth:`on`)."""
        self._remove(self._server_events, event, listener_or_tag)

    def _registry_for(self, event: str) -> ListenerRegistry:
        check_event_name(event)
        return self._lifecycle if event in LIFECYCLE_EVENTS else self._server_events

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
        conn = self._conn
        if conn is None or conn.state != OPEN:
            return False
        return conn.send(frame)

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

        ``callback(err, data)`` is called exactly once: ``(None, payload)`` with the server's
        reply, or ``(err, None)`` where ``err`` is a :class:`Result` with ``error`` and
        ``error_code``: ``WS_NOT_OPEN`` (called before ``emit`` returns), ``CALLBACK_TIMEOUT``
        after ``callback_timeout`` seconds, ``CONNECTION_CLOSED`` as soon as the connection
        goes away. ``on_pending()`` fires once after ``pending_timeout`` seconds if no reply
        came yet (only when ``pending_timeout < callback_timeout``).

        Args:
            event: event name (non-empty string).
            data: any JSON-serialisable value except ``None``.
            callback: ``callback(err, data)``; ``None`` for fire-and-forget.
            callback_timeout: ack timeout in seconds (default: the client's option).
            on_pending: called without arguments when the reply is slow.
            pending_timeout: seconds before ``on_pending`` (default: the client's option).

        Returns:
            Whether the frame was handed to the socket (``False`` when not open).

        Raises:
            TypeError: bad ``event``, ``callback`` or ``on_pending``, or ``data`` not JSON.
            ConfigError: ``data`` is ``None`` or a timeout is not a positive number.
        """
        check_event_name(event)
        if data is None:
            raise ConfigError("emit: data cannot be None")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be a function")
        timeouts = self._ack_timeouts(callback_timeout, on_pending, pending_timeout)
        conn = self._conn
        if conn is None or conn.state != OPEN:
            if callback is not None:
                _call_user(callback, Result(error="WebSocket is not open", error_code=WS_NOT_OPEN), None)
            return False
        if callback is None:
            return conn.send(frames.encode_text(events.encode_event(event, data), mask=True))
        callback_id = events.new_client_callback_id()
        frame = frames.encode_text(events.encode_request(event, data, callback_id), mask=True)
        self._acks.register(conn, _PendingAck(callback_id, callback, None), on_pending, *timeouts)
        return conn.send(frame)

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
        ``CALLBACK_TIMEOUT``, ``CONNECTION_CLOSED``, ``INVALID_ARGUMENT``). Options as in
        :meth:`emit`. Call ``.get()`` on it to block, or use :meth:`emit_and_wait`.

        While the connector is connecting (a first connection or a scheduled reconnect), the
        request waits for the connection up to ``connect_timeout`` instead of failing at once
        with ``WS_NOT_OPEN``; after :meth:`manual_close` (or with no attempt coming) it fails at once.
        """
        promise = gevent.event.AsyncResult()
        try:
            if not isinstance(event, str) or not event:
                raise ConfigError("No event provided in emitWithPromise")
            if data is None:
                raise ConfigError("Data cannot be null or undefined")
            timeouts = self._ack_timeouts(callback_timeout, on_pending, pending_timeout)
            callback_id = events.new_client_callback_id()
            frame = frames.encode_text(events.encode_request(event, data, callback_id), mask=True)
        except (ConfigError, TypeError, ValueError) as exc:
            promise.set(Result(success=False, error=str(exc), error_code=INVALID_ARGUMENT))
            return promise
        request = (_PendingAck(callback_id, None, promise), frame, on_pending, timeouts)
        conn = self._conn
        if conn is not None and conn.state == OPEN:
            self._send_request(conn, *request)
        elif self._opening():
            gevent.spawn(self._send_when_open, *request)
        else:
            promise.set(Result(success=False, error="WebSocket is not open", error_code=WS_NOT_OPEN))
        return promise

    def _opening(self) -> bool:
        """Whether a connection is on its way: connecting now, or a reconnect is scheduled."""
        if self._forbid:
            return False
        conn = self._conn
        return (conn is not None and conn.state == CONNECTING) or self._reconnect_timer is not None

    def _send_request(self, conn: _Connection, ack: _PendingAck, frame: bytes,
                      on_pending: Optional[Callable[[], Any]], timeouts: Tuple[float, float]) -> None:
        self._acks.register(conn, ack, on_pending, *timeouts)
        conn.send(frame)

    def _send_when_open(self, ack: _PendingAck, frame: bytes, on_pending: Optional[Callable[[], Any]],
                        timeouts: Tuple[float, float]) -> None:
        """A request made while connecting: sent once open, within ``connect_timeout``."""
        self._opened.wait(self._config.connect_timeout)
        conn = self._conn
        if conn is None or conn.state != OPEN:
            ack.result.set(Result(success=False, error="WebSocket is not open", error_code=WS_NOT_OPEN))  # type: ignore[union-attr]
            return
        self._send_request(conn, ack, frame, on_pending, timeouts)

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
        conn = self._conn
        if conn is not None and conn.state in (CONNECTING, OPEN):
            return
        self._forbid = False
        self._cancel_reconnect_timer()
        self._repeat = 0
        self._drop_connection()
        self._open_connection()

    def reconnect(self, repeat_reset: bool = False) -> None:
        """Schedule a reconnect attempt exactly like the original.

        With ``repeat_reset`` counts attempts from zero again. Does
        nothing when an attempt is already scheduled or after :meth:`manual_close`. Fires
        ``repeat-limit`` instead when ``repeat_limit`` attempts were made. Otherwise closes the
        current connection (code 4001, no local ``close`` event, pending acks fail with
        ``CONNECTION_CLOSED``), fires ``reconnect`` with ``{repeat, timeout}`` and connects
        again after ``timeout`` seconds.
        """
        self._reconnect()

    def set_ping_interval(self, new_interval: float, immediate: bool = False) -> None:
        """Change the heartbeat interval; with ``immediate``, restart the heartbeat now (if open).

        Raises:
            ConfigError: ``new_interval`` is not a positive number.
        """
        self._heartbeat.interval = _seconds("ping_interval", new_interval)
        conn = self._conn
        if immediate and conn is not None and conn.state == OPEN:
            self._heartbeat.start(conn)

    def manual_close(self) -> None:
        """Close for good: no reconnection until :meth:`connect`.

        Stops timers, cancels a connection attempt in flight, closes an open connection with
        4001 ``client manual close`` and fires the local ``close`` event with that code (only
        when a connection was open; a connection already closing, e.g. after a pong timeout,
        reports its own ``close``). Pending acks fail with ``CONNECTION_CLOSED``. Idempotent,
        and safe to call from a ``close`` listener.
        """
        self._forbid = True
        self._cancel_reconnect_timer()
        self._heartbeat.stop()
        conn = self._conn
        if conn is not None and conn.state == CLOSING:
            return  # already closing (e.g. pong timeout): its own close event follows
        was_open = conn is not None and conn.state == OPEN
        self._drop_connection()
        if was_open:
            logger.info("closed by the client: %s", self._config.url)
            self._fire("close", Result(code=MANUAL_CLOSE_CODE, reason=MANUAL_CLOSE_REASON, was_clean=True, error=None))

    def close(self) -> None:
        """Alias of :meth:`manual_close`."""
        self.manual_close()

    # Internals: connections ---------------------------------------------------------------

    def _open_connection(self) -> None:
        conn = _Connection(self, self._config)
        self._conn = conn
        conn.greenlet = gevent.spawn(conn.run)

    def _drop_connection(self) -> None:
        """Let go of the current connection without any local event (closing it with 4001)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.detached = True
        self._opened.clear()
        if conn.state == CONNECTING:
            conn.cancel_attempt()
        elif conn.state == OPEN:
            conn.start_close(MANUAL_CLOSE_CODE, MANUAL_CLOSE_REASON)
        self._heartbeat.stop()
        self._acks.fail_all(conn)

    def _reconnect(self) -> str:
        # The original stops the heartbeat first, even when it then returns early with the
        # connection still open (repeat_limit=0); here it stops with the dropped connection.
        if self._reconnect_timer is not None or self._forbid:
            return "skipped"
        limit = self._config.repeat_limit
        if limit is not None and limit <= self._repeat:
            self._fire("repeat-limit", limit)
            return "limit"
        self._drop_connection()
        self._repeat += 1
        config = self._config
        delay = reconnect_delay(self._repeat, threshold=config.fast_reconnect_threshold,
                                interval=config.fast_reconnect_interval, max_interval=config.reconnect_max_interval)
        logger.info("reconnect attempt %d in %.3fs to %s", self._repeat, delay, config.url)
        self._fire("reconnect", Result(repeat=self._repeat, timeout=delay))
        self._reconnect_timer = gevent.spawn_later(delay, self._reconnect_due)
        return "scheduled"

    def _reconnect_due(self) -> None:
        self._reconnect_timer = None
        if not self._forbid and self._conn is None:
            self._open_connection()

    def _cancel_reconnect_timer(self) -> None:
        timer, self._reconnect_timer = self._reconnect_timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)

    # Internals: what connections report (run in the connection's greenlet) -----------------

    def _conn_open(self, conn: _Connection) -> None:
        if conn.detached:
            return
        logger.info("connected to %s", self._config.url)
        self._opened.set()
        self._fire("open", Result(url=self._config.url))
        self._queue.post(self._after_open, conn)
        self._heartbeat.start(conn)

    def _after_open(self, conn: _Connection) -> None:
        # Like the original: ``repeat`` is reset after the open listeners ran.
        if not conn.detached:
            self._repeat = 0

    def _conn_failed(self, conn: _Connection, error: Exception) -> None:
        if conn.detached:
            return
        logger.info("connection attempt to %s failed: %s", self._config.url, error)
        self._fire("error", Result(error=error, message=str(error), status=getattr(error, "status", None)))
        self._queue.post(self._after_failed_attempt, conn, error)

    def _after_failed_attempt(self, conn: _Connection, error: Exception) -> None:
        # Runs after the ``error`` listeners: as the original, a failed attempt reconnects by
        # itself; once ``repeat_limit`` is reached the attempt ends with ``close`` 1006.
        if conn.detached:
            return
        if self._reconnect() == "limit":
            self._fire("close", Result(code=1006, reason="", was_clean=False, error=error))

    def _conn_closed(self, conn: _Connection, code: int, reason: str, was_clean: bool,
                     error: Optional[BaseException]) -> None:
        if conn.detached:
            return
        logger.info("connection to %s closed: %s %s", self._config.url, code, reason)
        self._opened.clear()
        self._heartbeat.stop()
        self._acks.fail_all(conn)
        self._fire("close", Result(code=code, reason=reason, was_clean=was_clean, error=error))
        if self._config.auto_reconnect:
            self._queue.post(self._after_close, conn, code)

    def _after_close(self, conn: _Connection, code: int) -> None:
        if not conn.detached and not self._forbid and code not in self._config.no_reconnect_codes:
            self._reconnect()

    def _conn_binary(self, conn: _Connection, data: bytes) -> None:
        """A binary message: the ``message`` event gets the ``bytes``; one that holds UTF-8 text is
        also handled as text (heartbeat, server event, ack), as the original's ``toString()`` does."""
        if conn.detached:
            return
        if self._lifecycle.has("message"):
            self._fire("message", data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return
        self._conn_text(conn, text, fire=False)

    def _conn_text(self, conn: _Connection, text: str, fire: bool = True) -> None:
        if conn.detached:
            return
        logger.debug("received %r", text[:200])
        if fire and self._lifecycle.has("message"):
            self._fire("message", text)
        if self._heartbeat.on_text(conn, text):
            return
        event, payload, callback_id = events.decode_server_frame(text)
        if payload is events.MISSING:
            payload = None
        if callback_id is not None:
            self._acks.resolve(conn, callback_id, payload)
        elif event is not None:
            self._queue.post(self._server_events.emit, event, payload)

    # Internals: events and ack options ---------------------------------------------------

    def _fire(self, event: str, *args: Any) -> None:
        self._queue.post(self._lifecycle.emit, event, *args)

    def _ack_timeouts(self, callback_timeout: Optional[float], on_pending: Optional[Callable[[], Any]],
                      pending_timeout: Optional[float]) -> Tuple[float, float]:
        if on_pending is not None and not callable(on_pending):
            raise TypeError("on_pending must be a function")
        ack_timeout = (self._config.callback_timeout if callback_timeout is None
                       else _seconds("callback_timeout", callback_timeout))
        pending = (self._config.pending_timeout if pending_timeout is None
                   else _seconds("pending_timeout", pending_timeout))
        return ack_timeout, pending


__all__ = [
    "WebSocketConnector",
    "LIFECYCLE_EVENTS",
    "WS_NOT_OPEN",
    "CALLBACK_TIMEOUT",
    "CONNECTION_CLOSED",
    "INVALID_ARGUMENT",
    "build_connect_url",  # re-exported from .upgrade
    "js_string",  # re-exported from .upgrade
]
