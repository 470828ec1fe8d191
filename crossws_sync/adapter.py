"""``WebSocketCrossServerAdapter``: the public facade over the WebSocket service, rooms and the bus.

Three layers, each usable alone:

* ``ws_options`` given: the WebSocket server (standalone, mounted in a WSGI app, or under gunicorn);
* ``redis_config`` given: the cross-server bus (:class:`~crossws_sync.bus.CrossServerBus`);
* both: distributed WebSocket routing (:class:`~crossws_sync.distributed.Router`) — broadcasts,
  direct messages and room broadcasts reach users on any node.

With ``redis_config``, the Redis side starts by itself, as the original connects in its
constructor: the constructor arms a start that runs at the process's first turn of the gevent hub
(any blocking call of a monkey-patched program), so a node that only listens for cross-server
events is live at once. A gunicorn master (``--preload``) never starts it; each worker does after
the fork. After any fork the child drops what it inherited and starts afresh. The standalone
listener starts with :meth:`start` / :meth:`serve_forever`.
"""
from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Set, Union

import gevent
import gevent.event
import gevent.lock

from .wire import frames

from .io import forks
from .config import as_list, check_redis_options, check_prefixes, parse_ws_options, positive_int, positive_number, resolve_server_name
from .server.connection import WebSocketConnection
from .errors import ConfigError
from .core.listeners import _SENTINEL, check_event_name
from .wire.events import MISSING, encode_event
from .wire.request import Request, parse_ws_request_params as _parse_params
from .core.rooms import RoomRegistry
from .server.wsgi import DEFAULT_HEAD_GUARD, HeadGuard, WebSocketMiddleware, make_server
from .cluster.methods import CrossServerMethods, _check_id
from .wire.deflate import options_from
from .errors import LimitExceededError
from .core.names import DEFAULT_MAX_NAME_BYTES, check_name, valid_name, check_namespace, namespace_channel, preset_namespace
from .server.service import SYSTEM_EVENTS, Reject, WebSocketService, WebSocketSettings, parse_allowed_origins

if TYPE_CHECKING:
    from .bus.bus import CrossServerBus
    from .cluster.routing import Router

logger = logging.getLogger("crossws_sync.server")

#: Seconds after the first cross-server registration of an ``autostart=False`` adapter that is
#: still not started, before a warning names the fix.
NOT_STARTED_WARNING_DELAY = 5.0



class WebSocketCrossServerAdapter(CrossServerMethods):
    """WebSocket server + cross-server bus + distributed routing (the original's main class).

    Original options (times in seconds):

    Args:
        server_name: unique node name; ``{host}``, ``{pid}``, ``{worker}`` are expanded. Defaults
            to ``<host>-<pid>`` when Redis is used (each gunicorn worker is its own node).
        bridge_prefix: prefix of the server-bridge channel (``"csbp:"``).
        ws_prefix: prefix of WebSocket routing channels (``"ws:"``).
        ws_options: enables the WebSocket service: ``host``, ``port`` (0 = any free port),
            ``path`` (``None``: every path), ``app`` (WSGI app for plain HTTP on the same port),
            ``no_server`` (do not listen: mount :attr:`wsgi_app` / :meth:`wsgi_middleware`),
            ``backlog``, ``ssl_context`` or ``certfile``/``keyfile``, ``max_payload``.
        server_ping_interval: protocol ping sweep period (20.0).
        enter_background_close_time: close sockets whose ``enter_background_time`` is older (10.0).
        heartbeat_str: the client heartbeat text echoed back (``""``).
        redis_force_ping, redis_ping_interval, redis_ping_timeout, selection_strategy,
        enable_redis_data_compression, on_redis_health_change, on_redis_subscription_error,
        custom_channels, redis_config: see :class:`~crossws_sync.bus.CrossServerBus`.
        preset_room_namespaces: namespaces subscribed at start and never unsubscribed.
        auto_unsubscribe: unsubscribe a namespace's channel when its last local room empties.

    Ours:

    Args:
        redis_codec: ``"msgpack"`` (default: the original's default, ``enableRedisDataCompression``
            true) or ``"json"`` (for original nodes started with ``enableRedisDataCompression:
            false``). ``enable_redis_data_compression``, when given, wins.
        redis_compress_threshold: zstd above this many bytes (``None``, the default: never,
            because original Node.js nodes cannot read zstd; set it in all-Python clusters).
        max_message_size: inbound message limit in bytes (1 MiB); larger closes with 1009.
        max_outbox_bytes: per-connection outbound buffer; a client over it is dropped (1008).
        authenticate: ``hook(request)`` run before the 101: return ``None``/``True`` to accept,
            any other value to accept and attach it as ``socket.identity``, ``False`` or a
            :class:`Reject` (returned or raised) to answer with an HTTP status.
        allowed_origins: which browser pages may open a socket (cross-site WebSocket hijacking
            guard). ``"same-origin"`` (the default): a request carrying an ``Origin`` header is
            accepted only when the origin's host and port are the request's ``Host``; requests
            without ``Origin`` (non-browser clients) are accepted. A list of origins
            (``["https://app.example.com"]``) accepts exactly those; ``"*"`` (or ``None``) any.
            Refused upgrades get 403 before the 101.
        handshake_timeout: seconds a connection may take to send a complete request head (10.0);
            past it: 408 and close.
        max_header_bytes: cap of a request's header block in bytes (32,768); past it: 431.
        max_pending_handshakes: connections with an unfinished request head (1,000); one more
            closes the oldest unfinished one (503), so slow or silent sockets cannot lock real
            clients out. These three apply to the standalone server; mounted in a WSGI server
            or under gunicorn, the process-wide defaults in ``crossws_sync.wsgi.DEFAULT_HEAD_GUARD``
            take the adapter's values.
        identify_timeout: close (4011) connections not mapped by ``set_user_socket`` in time.
        max_messages_per_second, rate_limit_burst: per-connection inbound rate limit.
        unknown_event_ack: answer acks of unknown events with ``{"error", "errorCode":
            "UNKNOWN_EVENT"}`` instead of letting the client time out.
        auto_cleanup: on close, remove the socket's mapping and rooms (original: app's job).
        max_connections: refuse upgrades (503) beyond this many connections.
        close_timeout: how long a closing handshake may take.
        duplicate_login: ``None``, ``"close_old"`` or ``"reject_new"`` when a user id is mapped
            while already mapped (on this node or, in a cluster, on another).
        duplicate_login_code: close code used by that policy (4012).
        node_heartbeat_interval: cluster registry heartbeat period (distributed mode).
        outage_buffer_size, outage_buffer_age: while no Redis node is healthy, messages for
            users on other nodes (broadcasts, direct and room messages) wait in a buffer of at most
            this many messages, each for at most this many seconds, and are sent in order once a
            node is back; overflow and expiry are counted in :attr:`routing_stats` and logged.
        signing_key: optional HMAC key for envelopes between our nodes.
        client_js_path: URL path where the browser client is served (``None``: not served).
        max_name_bytes: longest namespace, room id or socket id accepted, in UTF-8 bytes (256).
            Names are checked at every entry point (docs/api.md, "Names"): invalid text or a
            reserved namespace raises :class:`~crossws_sync.errors.InvalidNameError`.
        max_rooms_per_socket: rooms one socket id may be in at once (1,000; ``None``: no limit).
        max_namespaces_per_socket: namespaces one socket id may have rooms in at once (100;
            ``None``: no limit). A ``join_room`` past either limit raises
            :class:`~crossws_sync.errors.LimitExceededError` and changes nothing.
        per_message_deflate: permessage-deflate (RFC 7692), off by default like the original's
            ``ws`` server: ``True`` or a dict of ``server_no_context_takeover``,
            ``client_no_context_takeover``, ``server_max_window_bits``, ``client_max_window_bits``
            (9..15), ``threshold`` (bytes below which nothing is compressed, 1024), ``level``,
            ``mem_level`` (see :mod:`crossws_sync.deflate` for memory per connection).
        autostart: with ``redis_config``, connect Redis and start the bus by itself at the first
            turn of the gevent hub (True, as the original does in its constructor). With False,
            :meth:`start` (or first use) does, and a node with cross-server listeners that is
            still not started after 5 s logs a warning naming the fix.
    """

    def __init__(
        self,
        *,
        server_name: Optional[str] = None,
        bridge_prefix: str = "csbp:",
        ws_prefix: str = "ws:",
        ws_options: Optional[Dict[str, Any]] = None,
        server_ping_interval: float = 20.0,
        enter_background_close_time: float = 10.0,
        heartbeat_str: str = "",
        redis_force_ping: bool = True,
        redis_ping_interval: float = 5.0,
        redis_ping_timeout: float = 2.0,
        selection_strategy: str = "random",
        enable_redis_data_compression: Optional[bool] = None,
        on_redis_health_change: Optional[Callable[[bool, Dict[str, Any]], None]] = None,
        on_redis_subscription_error: Optional[Callable[[Dict[str, Any]], None]] = None,
        preset_room_namespaces: Iterable[str] = (),
        auto_unsubscribe: bool = True,
        custom_channels: Union[None, str, Iterable[str]] = None,
        redis_config: Optional[Sequence[Union[Dict[str, Any], str]]] = None,
        redis_codec: str = "msgpack",
        redis_compress_threshold: Optional[int] = None,
        max_message_size: Optional[int] = 1 << 20,
        max_outbox_bytes: int = 4 << 20,
        authenticate: Optional[Callable[[Request], Any]] = None,
        allowed_origins: Union[None, str, Iterable[str]] = "same-origin",
        handshake_timeout: float = 10.0,
        max_header_bytes: int = 32768,
        max_pending_handshakes: int = 1000,
        identify_timeout: Optional[float] = None,
        max_messages_per_second: Optional[float] = None,
        rate_limit_burst: Optional[int] = None,
        unknown_event_ack: bool = False,
        auto_cleanup: bool = False,
        max_connections: Optional[int] = None,
        close_timeout: float = 5.0,
        duplicate_login: Optional[str] = None,
        duplicate_login_code: int = 4012,
        node_heartbeat_interval: float = 2.0,
        outage_buffer_size: int = 10000,
        outage_buffer_age: float = 30.0,
        signing_key: Optional[bytes] = None,
        client_js_path: Optional[str] = None,
        max_name_bytes: int = DEFAULT_MAX_NAME_BYTES,
        max_rooms_per_socket: Optional[int] = 1000,
        max_namespaces_per_socket: Optional[int] = 100,
        autostart: bool = True,
        per_message_deflate: Union[bool, Dict[str, Any], None] = False,
    ) -> None:
        check_prefixes(bridge_prefix, ws_prefix)
        self.bridge_prefix = bridge_prefix
        self.ws_prefix = ws_prefix
        self._listen, max_payload = parse_ws_options(ws_options)
        if max_payload is not None:
            max_message_size = max_payload
        if duplicate_login not in (None, "close_old", "reject_new"):
            raise ConfigError("duplicate_login must be None, 'close_old' or 'reject_new'")
        self._duplicate_login = duplicate_login
        self._duplicate_login_code = duplicate_login_code
        self._auto_cleanup = bool(auto_cleanup)
        self._auto_unsubscribe = bool(auto_unsubscribe)
        check_redis_options(redis_config, selection_strategy, redis_codec)
        self._redis_config = list(redis_config or [])
        self._server_name_template = server_name
        self._server_name: Optional[str] = (
            resolve_server_name(server_name) if (server_name is not None or self._redis_config) else None
        )
        self._max_name_bytes = int(positive_int("max_name_bytes", max_name_bytes) or DEFAULT_MAX_NAME_BYTES)
        self._max_rooms = positive_int("max_rooms_per_socket", max_rooms_per_socket, allow_none=True)
        self._max_namespaces = positive_int("max_namespaces_per_socket", max_namespaces_per_socket, allow_none=True)
        self._preset_namespaces = [
            preset_namespace(ns, ws_prefix, bridge_prefix, self._max_name_bytes)
            for ns in as_list(list(preset_room_namespaces), "preset_room_namespaces")]
        self._custom_channels = as_list(custom_channels, "custom_channels")
        self._bus_options: Dict[str, Any] = dict(
            bridge_prefix=bridge_prefix, ws_prefix=ws_prefix, redis_codec=redis_codec,
            redis_compress_threshold=redis_compress_threshold,
            enable_redis_data_compression=enable_redis_data_compression, redis_force_ping=redis_force_ping,
            redis_ping_interval=positive_number("redis_ping_interval", redis_ping_interval),
            redis_ping_timeout=positive_number("redis_ping_timeout", redis_ping_timeout),
            selection_strategy=selection_strategy, on_redis_health_change=on_redis_health_change,
            on_redis_subscription_error=on_redis_subscription_error, custom_channels=self._custom_channels,
            signing_key=signing_key,
        )
        self._node_heartbeat_interval = positive_number("node_heartbeat_interval", node_heartbeat_interval)
        self._outage_buffer_size = positive_int("outage_buffer_size", outage_buffer_size)
        self._outage_buffer_age = positive_number("outage_buffer_age", outage_buffer_age)
        self.rooms = RoomRegistry()
        self._sockets: Dict[str, WebSocketConnection] = {}
        self._service: Optional[WebSocketService] = None
        if self._listen is not None:
            settings = WebSocketSettings(
                server_ping_interval=float(positive_number("server_ping_interval", server_ping_interval) or 20.0),
                enter_background_close_time=float(positive_number("enter_background_close_time", enter_background_close_time) or 10.0),
                heartbeat_str=heartbeat_str if isinstance(heartbeat_str, str) else str(heartbeat_str),
                max_message_size=positive_int("max_message_size", max_message_size, allow_none=True),
                max_outbox_bytes=int(positive_int("max_outbox_bytes", max_outbox_bytes) or 0),
                close_timeout=float(positive_number("close_timeout", close_timeout) or 5.0),
                max_connections=positive_int("max_connections", max_connections, allow_none=True),
                allowed_origins=parse_allowed_origins(allowed_origins),
                identify_timeout=positive_number("identify_timeout", identify_timeout, allow_none=True),
                max_messages_per_second=positive_number("max_messages_per_second", max_messages_per_second, allow_none=True),
                rate_limit_burst=positive_int("rate_limit_burst", rate_limit_burst, allow_none=True),
                unknown_event_ack=bool(unknown_event_ack),
                per_message_deflate=options_from(per_message_deflate),
                authenticate=authenticate,
            )
            self._service = WebSocketService(settings, on_closed=self._on_connection_closed)
            self._service.system_events.on("connection", self._on_connection, "crossws:internal")
        self._head_guard = HeadGuard(timeout=float(positive_number("handshake_timeout", handshake_timeout) or 10.0),
                                     max_header_bytes=int(positive_int("max_header_bytes", max_header_bytes) or 0),
                                     max_pending=int(positive_int("max_pending_handshakes", max_pending_handshakes) or 0))
        if self._listen is not None and self._listen.no_server:
            DEFAULT_HEAD_GUARD.timeout = self._head_guard.timeout
            DEFAULT_HEAD_GUARD.max_header_bytes = self._head_guard.max_header_bytes
            DEFAULT_HEAD_GUARD.max_pending = self._head_guard.max_pending
        self._static_files: Dict[str, Any] = {}
        if client_js_path:
            from .server.static import browser_client

            self._static_files[client_js_path] = ("application/javascript; charset=utf-8", browser_client())
        self._bus: Optional["CrossServerBus"] = None
        self._bus_setup: List[Any] = []
        self._router: Optional["Router"] = None
        self._http_server: Any = None
        self._started = False
        self._start_lock = gevent.lock.RLock()
        self._stopped = gevent.event.Event()
        self._closed = False
        #: WSGI app that serves WebSocket upgrades on any path (mount it with a dispatcher).
        self.wsgi_app: Optional[_LazyStartMiddleware] = (
            _LazyStartMiddleware(self, WebSocketMiddleware(self._service, None, None, self._static_files))
            if self._service is not None else None
        )
        self._autostart = bool(autostart)
        self._not_started_warning: Optional[gevent.Greenlet] = None
        forks.register(self)
        self._arm_autostart()

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> "WebSocketCrossServerAdapter":
        """Connect Redis, start background greenlets and (standalone) listen. Idempotent.

        Returns:
            self, so ``adapter = WebSocketCrossServerAdapter(...).start()`` works.
        """
        with self._start_lock:
            if self._started:
                return self
            if self._closed:
                raise ConfigError("adapter is closed; create a new one")
            self._started = True
            if self._redis_config and self._bus is None:
                self._start_bus()
            if self._service is not None:
                self._service.start_background()
                listen = self._listen
                if listen is not None and not listen.no_server and listen.port is not None:
                    app = WebSocketMiddleware(self._service, listen.app, listen.path, self._static_files)
                    self._http_server = make_server(listen.host, listen.port, app, ssl_args=listen.ssl_args,
                                                    backlog=listen.backlog, head_guard=self._head_guard)
                    try:
                        self._http_server.start()
                    except Exception as exc:
                        self._service.system_events.emit("server-error", exc)
                        raise ConfigError("Failed to start WebSocket server: %s" % exc) from exc
                    logger.info("listening on %s:%d", listen.host, self.port)
                    self._service.system_events.emit("listening")
        return self

    def _start_bus(self) -> None:
        from .bus.bus import CrossServerBus

        # Resolved again here, in the process that runs the node (after a gunicorn fork, {pid} differs).
        self._server_name = resolve_server_name(self._server_name_template)
        from .cluster.routing import Router, RouterSettings

        router = Router(self, RouterSettings(
            server_name=self._server_name or "", ws_prefix=self.ws_prefix, websocket=self._service is not None,
            preset_namespaces=tuple(self._preset_namespaces),
            heartbeat_interval=float(self._node_heartbeat_interval or 2.0),
            outage_buffer_size=int(self._outage_buffer_size or 10000),
            outage_buffer_age=float(self._outage_buffer_age or 30.0),
            duplicate_login=self._duplicate_login, duplicate_login_code=self._duplicate_login_code,
        ))
        self._bus = CrossServerBus(
            server_name=self._server_name, redis_config=self._redis_config, initial_channels=router.initial_channels(),
            ws_message_handler=router.on_ws_message, **self._bus_options
        )
        self._router = router
        for method, args in self._bus_setup:
            getattr(self._bus, method)(*args)
        router.start(self._bus)

    def _ensure_started(self) -> None:
        if not self._started and not self._closed:
            self.start()

    def _arm_autostart(self) -> None:
        if self._redis_config and self._autostart and not self._closed:
            gevent.spawn_later(0, self._auto_start)

    def _auto_start(self) -> None:
        """Start the Redis side unless this process is a gunicorn master (it forks workers,
        which start their own; their worker class calls :func:`forks.start_all`)."""
        if self._started or self._closed:
            return
        if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/") and "CROSSWS_WORKER_ID" not in os.environ:
            return
        try:
            with self._start_lock:
                if not self._started and not self._closed and self._bus is None:
                    self._start_bus()
        except Exception:
            logger.exception("the adapter could not start its Redis side by itself; call start() to see why")

    def _on_registration(self) -> None:
        if not self._autostart and self._bus is None and self._not_started_warning is None:
            self._not_started_warning = gevent.spawn_later(NOT_STARTED_WARNING_DELAY, self._warn_if_not_started)

    def _warn_if_not_started(self) -> None:
        if self._bus is None and not self._closed:
            logger.warning("cross-server listeners are registered but the adapter was not started after %.0f s "
                           "(autostart=False): call adapter.start() (or serve_forever()) so this node "
                           "receives cross-server events", NOT_STARTED_WARNING_DELAY)

    def serve_forever(self, *, stop_signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Start, then block until :meth:`close` (SIGTERM/SIGINT shut down gracefully with 1001)."""
        self.start()
        handlers = [gevent.signal_handler(sig, lambda: gevent.spawn(self.shutdown)) for sig in stop_signals]
        try:
            self._stopped.wait()
        finally:
            for handler in handlers:
                handler.cancel()

    def shutdown(self, *, code: int = 1001, reason: str = "server shutdown", timeout: float = 5.0) -> None:
        """Graceful stop: leave the cluster, close every client with ``code``, stop everything."""
        if self._closed:
            return
        self._closed = True
        if self._router is not None:
            self._router.leave_cluster()
        if self._http_server is not None:
            self._http_server.stop_accepting()
        if self._service is not None:
            self._service.close_all(code, reason, timeout)
            self._service.stop_background()
        if self._http_server is not None:
            self._http_server.stop(timeout=1)
            self._http_server = None
        if self._router is not None:
            self._router.stop()
        if self._bus is not None:
            self._bus.close()
        if self._service is not None:
            self._service.system_events.emit("ws-server-close")
        forks.unregister(self)
        self._stopped.set()

    def close(self, code: int = 1001, reason: str = "server shutdown", timeout: float = 5.0) -> None:
        """Same as :meth:`shutdown`."""
        self.shutdown(code=code, reason=reason, timeout=timeout)

    def _after_fork(self) -> None:
        # Greenlets and Redis connections of the parent are not ours: stop the inherited ones
        # (their connections are closed in the child only: a Redis connection is shut down only in
        # the process that opened it) and start afresh.
        bus, router = self._bus, self._router
        if router is not None:
            router.abandon()
        if bus is not None:
            bus.abandon()
        self._bus = None
        self._router = None
        self._http_server = None
        self._started = False
        self._arm_autostart()

    @property
    def port(self) -> Optional[int]:
        """The port the standalone server listens on (useful with ``port=0``)."""
        if self._http_server is not None:
            return self._http_server.server_port
        return self._listen.port if self._listen else None

    def wsgi_middleware(self, app: Optional[Callable[..., Any]] = None, path: Optional[str] = "/ws") -> "_LazyStartMiddleware":
        """Wrap a WSGI app: upgrades on ``path`` come here, the rest goes to ``app``.

        Flask: ``app.wsgi_app = adapter.wsgi_middleware(app.wsgi_app, path="/ws")``.
        """
        if self._service is None:
            raise ConfigError("WebSocket is disabled: pass ws_options (e.g. {'no_server': True})")
        return _LazyStartMiddleware(self, WebSocketMiddleware(self._service, app, path, self._static_files))

    # WebSocket events --------------------------------------------------------------------

    def on_websocket_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Register a listener: one of the original's system events or an event sent by clients.

        Client events are called as ``listener(socket, payload, callback)``; ``callback(data)``
        sends the ack and is ``None`` when the client asked for none.
        """
        check_event_name(event)
        if self._service is None:
            logger.debug("on_websocket_event(%r) ignored: WebSocket disabled", event)
            return
        self._registry_for(event).on(event, listener, tag)

    def once_websocket_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Like :meth:`on_websocket_event`, removed after its first call."""
        check_event_name(event)
        if self._service is None:
            return
        self._registry_for(event).on(event, listener, tag, once=True)

    def off_websocket_event(self, event: str, listener_or_tag: Any = _SENTINEL) -> None:
        """Remove all listeners of ``event``, one function, or the listeners with a tag."""
        check_event_name(event)
        if self._service is None:
            return
        self._registry_for(event).off(event, listener_or_tag)

    def _registry_for(self, event: str) -> Any:
        assert self._service is not None
        return self._service.system_events if event in SYSTEM_EVENTS else self._service.client_events

    # Sending to clients ------------------------------------------------------------------

    def broadcast(self, event: str, data: Any = MISSING, local_only: bool = False) -> int:
        """Send to every open client of every node (this node only with ``local_only``).

        Returns:
            how many local clients took the frame.
        """
        check_event_name(event)
        if self._service is None and not self._redis_config:
            return 0
        text = encode_event(event, data)
        sent = self._service.send_to_all(frames.encode_text(text)) if self._service is not None else 0
        if not local_only:
            self._ensure_started()
            if self._router is not None:
                self._router.publish_broadcast(text)
        return sent

    def to_socket_id(self, socket_id: str, event: str, data: Any = MISSING) -> bool:
        """Send to one user wherever it is connected. Returns True if delivered locally."""
        _check_id("socketId", socket_id)
        check_event_name(event)
        if self._service is None and not self._redis_config:
            return False
        text = encode_event(event, data)
        conn = self._sockets.get(socket_id)
        if conn is not None and conn.open:
            return conn.send_frame(frames.encode_text(text))
        if self._redis_config:
            self._name("socketId", socket_id)  # it goes into a Redis envelope
        self._ensure_started()
        if self._router is not None:
            self._router.publish_unicast(socket_id, text)
        return False

    def to_socket_ids(self, socket_ids: Iterable[str], event: str, data: Any = MISSING) -> int:
        """Send to several users wherever they are. Returns how many were delivered locally."""
        check_event_name(event)
        if (self._service is None and not self._redis_config) or isinstance(socket_ids, str):
            return 0
        ids = [sid for sid in socket_ids if isinstance(sid, str) and sid]
        if not ids:
            return 0
        text = encode_event(event, data)
        frame = frames.encode_text(text)
        remote: List[str] = []
        sent = 0
        for socket_id in dict.fromkeys(ids):
            conn = self._sockets.get(socket_id)
            if conn is not None and conn.open:
                if conn.send_frame(frame):
                    sent += 1
            else:
                remote.append(socket_id)
        if remote:
            remote = [sid for sid in remote if valid_name(sid, self._max_name_bytes)]
        if remote:
            self._ensure_started()
            if self._router is not None:
                self._router.publish_multicast(remote, text)
        return sent

    def broadcast_to_room(self, room_namespace: str, room_id: str, event: str, data: Any = MISSING, *,
                          exclude_socket_ids: Iterable[str] = (), local_only: bool = False,
                          room_destroy: bool = False, **compat: Any) -> int:
        """Send to every member of one room on every node. Returns local deliveries.

        ``room_destroy`` removes the room after sending, on every node (the original's
        ``roomDstroy`` spelling is accepted too).
        """
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        check_event_name(event)
        if compat:
            if set(compat) != {"roomDstroy"}:
                raise TypeError("unexpected keyword argument(s): %s" % ", ".join(sorted(compat)))
            room_destroy = bool(compat["roomDstroy"])
        if self._service is None and not self._redis_config:
            return 0
        excluded = set(self._name("excludeSocketIds[]", x) for x in exclude_socket_ids) if exclude_socket_ids else set()
        text = encode_event(event, data)
        sent = self.deliver_to_room(room_namespace, room_id, frames.encode_text(text), excluded)
        if room_destroy:
            self.remove_room(room_namespace, room_id)
        if not local_only:
            self._ensure_started()
            if self._router is not None:
                self._router.publish_room(room_namespace, room_id, text, list(excluded), room_destroy)
        return sent

    def broadcast_raw(self, data: Union[str, bytes], *, local_only: bool = False) -> int:
        """Send one raw message (outside the JSON event protocol) to every client on every node:
        ``str`` as a text frame, ``bytes`` as a binary frame, byte for byte. Returns local deliveries.

        Raises:
            TypeError: ``data`` is neither ``str`` nor ``bytes``.
        """
        frame = frames.encode_data(data)
        sent = self._service.send_to_all(frame) if self._service is not None else 0
        if not local_only and self._redis_config:
            self._ensure_started()
            if self._router is not None:
                self._router.publish_broadcast(data if isinstance(data, str) else bytes(data))
        return sent

    def broadcast_raw_to_room(self, room_namespace: str, room_id: str, data: Union[str, bytes], *,
                              exclude_socket_ids: Iterable[str] = (), local_only: bool = False) -> int:
        """Send one raw message to every member of a room on every node (see :meth:`broadcast_raw`).

        Raises:
            TypeError: ``data`` is neither ``str`` nor ``bytes``.
            InvalidNameError: a name the name policy refuses.
        """
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        excluded = set(self._name("excludeSocketIds[]", x) for x in exclude_socket_ids) if exclude_socket_ids else set()
        sent = self.deliver_to_room(room_namespace, room_id, frames.encode_data(data), excluded)
        if not local_only and self._redis_config:
            self._ensure_started()
            if self._router is not None:
                self._router.publish_room(room_namespace, room_id, data if isinstance(data, str) else bytes(data),
                                          list(excluded), False)
        return sent

    def deliver_to_room(self, room_namespace: str, room_id: str, frame: bytes, excluded: Set[str]) -> int:
        """Write one pre-encoded frame to the local members of a room (used by the router too)."""
        sent = 0
        sockets = self._sockets
        for socket_id in self.rooms.members(room_namespace, room_id):
            if socket_id in excluded:
                continue
            conn = sockets.get(socket_id)
            if conn is not None and conn.send_frame(frame):
                sent += 1
        return sent

    def deliver_to_socket(self, socket_id: str, frame: bytes) -> bool:
        """Write a pre-encoded frame to a locally mapped socket (used by the router)."""
        conn = self._sockets.get(socket_id)
        return conn is not None and conn.send_frame(frame)

    def deliver_to_all(self, frame: bytes) -> int:
        """Write a pre-encoded frame to every local client (used by the router)."""
        return self._service.send_to_all(frame) if self._service is not None else 0

    # Rooms --------------------------------------------------------------------------------

    def channel_for_namespace(self, room_namespace: str) -> str:
        """The Redis channel of a room namespace: ``ws_prefix + room_namespace``.

        One-to-one: the name policy refuses namespaces that would alias another channel.

        Raises:
            InvalidNameError: ``room_namespace`` is invalid or reserved.
        """
        return namespace_channel(self._namespace(room_namespace), self.ws_prefix)

    def _namespace(self, room_namespace: object) -> str:
        return check_namespace(room_namespace, self.ws_prefix, self.bridge_prefix, self._max_name_bytes)

    def _name(self, label: str, value: object) -> str:
        return check_name(label, value, self._max_name_bytes)

    def _check_room_limits(self, room_namespace: str, room_id: str, socket_id: str) -> None:
        rooms = self.rooms
        if rooms.is_joined(socket_id, room_namespace, room_id):
            return
        if self._max_rooms is not None and rooms.socket_room_count(socket_id) >= self._max_rooms:
            raise LimitExceededError("socket %r is already in %d rooms (max_rooms_per_socket)"
                                     % (socket_id, self._max_rooms), "max_rooms_per_socket", self._max_rooms)
        if (self._max_namespaces is not None and not rooms.is_joined(socket_id, room_namespace)
                and rooms.socket_namespace_count(socket_id) >= self._max_namespaces):
            raise LimitExceededError("socket %r already has rooms in %d namespaces (max_namespaces_per_socket)"
                                     % (socket_id, self._max_namespaces), "max_namespaces_per_socket",
                                     self._max_namespaces)

    def join_room(self, room_namespace: str, room_id: str, socket_id: str) -> None:
        """Add a user to a room. With Redis, returns once this node is subscribed to the
        namespace's channel on every healthy Redis node, so no room message can be missed."""
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        self._name("socketId", socket_id)
        self._check_room_limits(room_namespace, room_id, socket_id)
        self.rooms.join(room_namespace, room_id, socket_id)
        if self._redis_config:
            self._ensure_started()
            if self._router is not None:
                self._router.room_joined(room_namespace, room_id, socket_id)
                # Always ask (idempotent): a second joiner must also wait for a pending SUBSCRIBE.
                self._router.namespace_used(room_namespace)

    def leave_room(self, room_namespace: str, room_id: str, socket_id: str) -> None:
        """Remove a user from a room; an emptied namespace is unsubscribed (``auto_unsubscribe``)."""
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        self._name("socketId", socket_id)
        was_member = self.rooms.is_joined(socket_id, room_namespace, room_id)
        emptied = self.rooms.leave(room_namespace, room_id, socket_id)
        if was_member and self._router is not None:
            self._router.room_left(room_namespace, room_id, socket_id)
        if emptied:
            self._namespace_emptied(room_namespace)

    def remove_room(self, room_namespace: str, room_id: str) -> None:
        """Delete a room locally (every member leaves it)."""
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        members = list(self.rooms.members(room_namespace, room_id)) if self._router is not None else []
        emptied = self.rooms.remove_room(room_namespace, room_id)
        for socket_id in members:
            self._router.room_left(room_namespace, room_id, socket_id)  # type: ignore[union-attr]
        if emptied:
            self._namespace_emptied(room_namespace)

    def _namespace_emptied(self, room_namespace: str) -> None:
        if self._router is not None and self._auto_unsubscribe and room_namespace not in self._preset_namespaces:
            self._router.namespace_unused(room_namespace)

    def get_socket_count_in_room(self, room_namespace: str, room_id: Optional[str] = None, *, exact_match: bool = True) -> int:
        """Local member count of a room (prefix of room ids when not ``exact_match``)."""
        self._name("roomNamespace", room_namespace)
        return self.rooms.socket_count(room_namespace, room_id, exact_match=exact_match)

    def get_room_socket_ids(self, room_namespace: str, room_id: Optional[str] = None, *, exact_match: bool = True) -> Set[str]:
        """Local member ids (a fresh set)."""
        self._name("roomNamespace", room_namespace)
        return self.rooms.socket_ids(room_namespace, room_id, exact_match=exact_match)

    def get_joined_rooms(self, socket_id: str, room_namespace: Optional[str] = None) -> Dict[str, Set[str]]:
        """``{namespace: {room_id}}`` of a user (a copy), optionally for namespaces with a prefix."""
        self._name("socketId", socket_id)
        return self.rooms.joined_rooms(socket_id, room_namespace)

    def is_joined_room(self, socket_id: str, room_namespace: str, room_id: Optional[str] = None) -> bool:
        """Whether the user is in the room (any room of the namespace without ``room_id``)."""
        if not isinstance(socket_id, str) or not isinstance(room_namespace, str):
            return False
        return self.rooms.is_joined(socket_id, room_namespace, room_id)

    def get_room_count(self, room_namespace: str, *, exact_match: bool = True) -> int:
        """Local number of rooms of a namespace (namespace prefix when not ``exact_match``)."""
        self._name("roomNamespace", room_namespace)
        return self.rooms.room_count(room_namespace, exact_match=exact_match)

    def get_room_ids(self, room_namespace: str, *, exact_match: bool = True) -> List[str]:
        """Local room ids of a namespace."""
        self._name("roomNamespace", room_namespace)
        return self.rooms.room_ids(room_namespace, exact_match=exact_match)

    # Socket mapping -----------------------------------------------------------------------

    def set_user_socket(self, socket_id: str, socket: WebSocketConnection) -> bool:
        """Bind a user id to a connection so rooms and direct messages find it.

        With ``duplicate_login`` set, an id already bound to another open connection (here or,
        in a cluster, on another node) closes the older one or refuses the new one.

        Returns:
            False when the ``reject_new`` policy refused (the new socket is closed), else True.
        """
        self._name("socketId", socket_id)
        if socket is None:
            raise ConfigError("Invalid socket object.")
        previous = self._sockets.get(socket_id)
        local_dup = previous is not None and previous is not socket and previous.open
        remote_dup = bool(self._router.duplicate_owner(socket_id)) if self._router is not None else False
        if self._duplicate_login and (local_dup or remote_dup):
            if self._duplicate_login == "reject_new":
                socket.close(self._duplicate_login_code, "duplicate login")
                return False
            if local_dup:
                previous.close(self._duplicate_login_code, "logged in elsewhere")  # type: ignore[union-attr]
            if remote_dup:
                self._router.kick_elsewhere(socket_id, self._duplicate_login_code)  # type: ignore[union-attr]
        self._sockets[socket_id] = socket
        if isinstance(socket, WebSocketConnection):
            socket.socket_id = socket_id
        if self._router is not None:
            self._router.user_mapped(socket_id)
        return True

    def remove_user_socket(self, socket_id: str, socket: Optional[WebSocketConnection] = None) -> None:
        """Unbind a user id and remove it from every room.

        A late ``close`` of an older connection never removes a newer mapping: called from a
        ``close`` listener (or with ``socket``), only that socket's own mapping is removed.
        """
        _check_id("socketId", socket_id)
        closing = socket or (self._service.closing.get(gevent.getcurrent()) if self._service is not None else None)
        current = self._sockets.get(socket_id)
        if closing is not None and current is not None and current is not closing:
            logger.debug("remove_user_socket(%r) skipped: mapped to a newer connection", socket_id)
            return
        self._sockets.pop(socket_id, None)
        if self._router is not None:
            for namespace, room_ids in self.rooms.joined_rooms(socket_id).items():
                for room_id in room_ids:
                    self._router.room_left(namespace, room_id, socket_id)
        emptied = self.rooms.remove_socket(socket_id)
        if emptied and self._router is not None and self._auto_unsubscribe:
            presets = self._preset_namespaces
            self._router.namespaces_unused([ns for ns in emptied if ns not in presets])
        if self._router is not None:
            self._router.user_unmapped(socket_id)

    def get_socket_instance(self, socket_id: str) -> Optional[WebSocketConnection]:
        """The connection bound to ``socket_id`` on this node, or ``None``."""
        _check_id("socketId", socket_id)
        return self._sockets.get(socket_id)

    def get_socket_client_count(self) -> int:
        """Number of user ids bound on this node."""
        return len(self._sockets)

    def get_local_socket_ids(self) -> List[str]:
        """User ids bound on this node."""
        return list(self._sockets)

    def get_server_name(self) -> Optional[str]:
        """This node's name."""
        return self._server_name

    def get_wss(self) -> Optional[WebSocketService]:
        """The WebSocket service (``clients``, stats), or ``None`` when WebSocket is disabled."""
        return self._service

    @staticmethod
    def parse_ws_request_params(request: Any, *, auto_lower_case_keys: bool = False, parse_path: bool = True,
                                auto_remove_leading_slash: bool = True, include_headers: bool = False) -> Dict[str, Any]:
        """``{"params", "path"}`` of an upgrade request (see :func:`crossws_sync.parse_ws_request_params`)."""
        return _parse_params(request, auto_lower_case_keys=auto_lower_case_keys, parse_path=parse_path,
                             auto_remove_leading_slash=auto_remove_leading_slash, include_headers=include_headers)

    def _on_connection(self, socket: WebSocketConnection, request: Request) -> None:
        self._ensure_started()

    def _on_connection_closed(self, conn: WebSocketConnection, code: int, reason: str) -> None:
        socket_id = conn.socket_id
        if socket_id is None:
            return
        if self._auto_cleanup:
            self.remove_user_socket(socket_id, conn)
        elif self._router is not None and self._sockets.get(socket_id) is conn:
            # The app keeps the mapping (the original's default), but a closed socket must not
            # claim the user in the cluster: other nodes would keep sending there.
            self._router.user_unmapped(socket_id)


class _LazyStartMiddleware:
    """Starts the adapter (Redis, sweeps) on the first request of the mounted app."""

    def __init__(self, adapter: WebSocketCrossServerAdapter, inner: WebSocketMiddleware) -> None:
        self.adapter = adapter
        self.inner = inner

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not self.adapter._started:
            self.adapter._ensure_started()
        return self.inner(environ, start_response)


CrossServerAdapter = WebSocketCrossServerAdapter

__all__ = ["WebSocketCrossServerAdapter", "CrossServerAdapter", "Reject"]
