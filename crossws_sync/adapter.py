"""``WebSocketCrossServerAdapter``: the public facade over the WebSocket service, rooms and the bus.

Three layers, each usable alone:

* ``ws_options`` given: the WebSocket server (standalone, mounted in a WSGI app, or under gunicorn);
* ``redis_config`` given: the cross-server bus (:class:`~crossws_sync.bus.CrossServerBus`);
* both: distributed WebSocket routing (:class:`~crossws_sync.cluster.routing.Router`) — broadcasts,
  direct messages and room broadcasts reach users on any node.

With ``redis_config``, the Redis side starts by itself at the process's first turn of the gevent
hub, as the original connects in its constructor; gunicorn masters and forks are handled
(:mod:`crossws_sync.cluster.lifecycle`). The standalone listener starts with :meth:`start` /
:meth:`serve_forever`.

The facade composes its parts and delegates to them: the WebSocket service
(:mod:`crossws_sync.server.service`), this node's users, rooms and sends
(:class:`~crossws_sync.cluster.local.LocalNode`), the cross-server and cluster methods
(:class:`~crossws_sync.cluster.crossserver.CrossServer`), the start and the stop
(:class:`~crossws_sync.cluster.lifecycle.Lifecycle`) and the process's bus and router
(:class:`~crossws_sync.cluster.runtime.Runtime`).
"""
from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Set, Union

import gevent
import gevent.event
import gevent.lock

from .cluster.asks import Asks, AskSettings
from .cluster.contracts import RouterSettings
from .cluster.crossserver import CrossServer
from .cluster.lifecycle import Lifecycle
from .cluster.probes import LivenessEndpoint, ReadinessEndpoint, node_readiness
from .cluster.local import LocalNode, LocalSettings
from .cluster.runtime import Runtime
from .config import (as_list, check_prefixes, check_redis_options, close_code, dashboard_options, health_options,
                     metrics_options, parse_ws_options, positive_int, positive_number, recovery_options)
from .core.listeners import _SENTINEL, check_event_name
from .core.names import DEFAULT_MAX_NAME_BYTES, preset_namespace
from .errors import ConfigError
from .io import forks
from .results import Result
from .server.connection import WebSocketConnection
from .server.service import SYSTEM_EVENTS, Reject, WebSocketService, WebSocketSettings
from .server.wsgi import DEFAULT_HEAD_GUARD, HeadGuard, WebSocketMiddleware
from .wire.events import MISSING
from .wire.request import Request, parse_ws_request_params as _parse_params

if TYPE_CHECKING:
    from .bus.bus import CrossServerBus
    from .cluster.routing import Router

logger = logging.getLogger("crossws_sync.server")

class WebSocketCrossServerAdapter:
    """WebSocket server + cross-server bus + distributed routing (the original's main class).

    Every option is a keyword argument; times are in seconds. The original's options keep their
    names in snake_case (``server_name``, ``ws_options``, ``redis_config``, ...); ours add
    codecs, limits against hostile clients, ``authenticate``, ``allowed_origins``,
    ``duplicate_login``, ``per_message_deflate``, ``autostart`` and the cluster's timings. The
    table of every option, its default and what it does is in docs/api.md ("Constructor options").

    Raises:
        ConfigError: an unknown or invalid option (every option is checked here, at once).
        InvalidNameError: a preset namespace that the name policy refuses.
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
        connection_state_recovery: Union[None, bool, Dict[str, Any]] = None,
        max_pending_acks: int = 10000,
        max_pending_acks_per_socket: int = 100,
        max_accept_rate: Optional[float] = None,
        accept_burst: Optional[int] = None,
        shutdown_code: int = 1012,
        restart_retry_window: float = 10.0,
        metrics: Union[bool, Dict[str, Any], None] = False,
        health: Union[bool, Dict[str, Any], None] = False,
        dashboard: Union[bool, Dict[str, Any], None] = False,
    ) -> None:
        check_prefixes(bridge_prefix, ws_prefix)
        self._shutdown_code = close_code("shutdown_code", shutdown_code)
        self._restart_retry_window = positive_number("restart_retry_window", restart_retry_window, allow_zero=True,
                                                     finite=True)
        self.bridge_prefix = bridge_prefix
        self.ws_prefix = ws_prefix
        self._listen, max_payload = parse_ws_options(ws_options)
        if max_payload is not None:
            max_message_size = max_payload
        if duplicate_login not in (None, "close_old", "reject_new"):
            raise ConfigError("duplicate_login must be None, 'close_old' or 'reject_new'")
        check_redis_options(redis_config, selection_strategy, redis_codec)
        recovery = recovery_options(connection_state_recovery)
        if recovery is not None and not redis_config:
            raise ConfigError("connection_state_recovery needs redis_config: the history is kept in Redis")
        max_name_bytes = int(positive_int("max_name_bytes", max_name_bytes) or DEFAULT_MAX_NAME_BYTES)
        metrics_config = metrics_options(metrics)
        health_config = health_options(health)
        dashboard_config = dashboard_options(dashboard)
        if any(part is not None for part in (metrics_config, health_config, dashboard_config)) and self._listen is None:
            raise ConfigError("metrics, health and dashboard are served by the WebSocket listener or middleware: "
                              "pass ws_options")
        local = LocalSettings(
            ws_prefix=ws_prefix, bridge_prefix=bridge_prefix, max_name_bytes=max_name_bytes,
            max_rooms_per_socket=positive_int("max_rooms_per_socket", max_rooms_per_socket, allow_none=True),
            max_namespaces_per_socket=positive_int("max_namespaces_per_socket", max_namespaces_per_socket, allow_none=True),
            preset_namespaces=tuple(preset_namespace(ns, ws_prefix, bridge_prefix, max_name_bytes)
                                    for ns in as_list(list(preset_room_namespaces), "preset_room_namespaces")),
            auto_unsubscribe=bool(auto_unsubscribe), auto_cleanup=bool(auto_cleanup),
            duplicate_login=duplicate_login, duplicate_login_code=duplicate_login_code)
        bus_options: Dict[str, Any] = dict(
            bridge_prefix=bridge_prefix, ws_prefix=ws_prefix, redis_codec=redis_codec,
            redis_compress_threshold=redis_compress_threshold,
            enable_redis_data_compression=enable_redis_data_compression, redis_force_ping=redis_force_ping,
            redis_ping_interval=positive_number("redis_ping_interval", redis_ping_interval),
            redis_ping_timeout=positive_number("redis_ping_timeout", redis_ping_timeout),
            selection_strategy=selection_strategy, on_redis_health_change=on_redis_health_change,
            on_redis_subscription_error=on_redis_subscription_error,
            custom_channels=as_list(custom_channels, "custom_channels"), signing_key=signing_key,
        )
        router_settings = RouterSettings(
            server_name="", ws_prefix=ws_prefix, websocket=self._listen is not None,
            preset_namespaces=local.preset_namespaces,
            heartbeat_interval=positive_number("node_heartbeat_interval", node_heartbeat_interval),
            outage_buffer_size=positive_int("outage_buffer_size", outage_buffer_size),
            outage_buffer_age=positive_number("outage_buffer_age", outage_buffer_age),
            duplicate_login=local.duplicate_login, duplicate_login_code=local.duplicate_login_code)
        self._service: Optional[WebSocketService] = None
        if self._listen is not None:
            self._service = WebSocketService(WebSocketSettings.from_options(
                server_ping_interval=server_ping_interval, enter_background_close_time=enter_background_close_time,
                heartbeat_str=heartbeat_str, max_message_size=max_message_size, max_outbox_bytes=max_outbox_bytes,
                close_timeout=close_timeout, max_connections=max_connections, allowed_origins=allowed_origins,
                identify_timeout=identify_timeout, max_messages_per_second=max_messages_per_second,
                rate_limit_burst=rate_limit_burst, unknown_event_ack=unknown_event_ack,
                per_message_deflate=per_message_deflate, authenticate=authenticate,
                max_accept_rate=max_accept_rate, accept_burst=accept_burst,
            ), on_closed=self._on_connection_closed)
            self._service.system_events.on("connection", self._on_connection, "crossws:internal")
        self._runtime = Runtime(self._ensure_started, list(redis_config or []))
        self._local = LocalNode(self._service, self._runtime, local)
        self._asks = Asks(self._local, self._runtime, AskSettings(
            max_pending=positive_int("max_pending_acks", max_pending_acks),
            max_pending_per_socket=positive_int("max_pending_acks_per_socket", max_pending_acks_per_socket)))
        if self._service is not None:
            self._service.on_answer = self._asks.answer
        #: the local rooms (the registry behind the room methods)
        self.rooms = self._local.rooms
        self._cross = CrossServer(self._runtime, self._local,
                                  start_redis=lambda: self._life.start_redis(),
                                  on_registration=lambda: self._life.on_registration(), server_name=self.get_server_name)
        head_guard = HeadGuard(timeout=positive_number("handshake_timeout", handshake_timeout),
                               max_header_bytes=positive_int("max_header_bytes", max_header_bytes),
                               max_pending=positive_int("max_pending_handshakes", max_pending_handshakes))
        if self._listen is not None and self._listen.no_server:
            DEFAULT_HEAD_GUARD.configure_like(head_guard)
        self._static_files: Dict[str, Any] = {}
        if client_js_path:
            from .server.static import browser_client

            self._static_files[client_js_path] = ("application/javascript; charset=utf-8", browser_client())
        #: ``{path: wsgi_app}`` served before the app: the metrics, the probes and the dashboard
        self._endpoints: Dict[str, Any] = {}
        background: List[Any] = []
        self._life = Lifecycle(runtime=self._runtime, local=self._local, cross=self._cross, service=self._service,
                               listen=self._listen, server_name=server_name,
                               bus_options=bus_options, router_settings=router_settings, head_guard=head_guard,
                               static_files=self._static_files, autostart=bool(autostart), recovery=recovery,
                               on_router=self._asks.attach, endpoints=self._endpoints, background=background)
        self._readiness = node_readiness(runtime=self._runtime, closed=lambda: self._life.closed,
                                         started=lambda: self._life.started)
        if health_config is not None:
            self._endpoints[health_config.liveness_path] = LivenessEndpoint()
            self._endpoints[health_config.readiness_path] = ReadinessEndpoint(self._readiness)
        if metrics_config is not None:
            try:
                from .cluster.metrics import MetricsEndpoint, NodeCollector
            except ImportError as exc:
                raise ConfigError("metrics=True needs prometheus_client: pip install 'crossws_sync[metrics]' (%s)"
                                  % exc) from None
            collector = NodeCollector(service=self._service, local=self._local, runtime=self._runtime,
                                      server_name=self.get_server_name, asks=self._asks,
                                      head_guard=DEFAULT_HEAD_GUARD if self._listen and self._listen.no_server else head_guard,
                                      readiness=self._readiness)
            endpoint = MetricsEndpoint(collector, metrics_config)
            if metrics_config.path in self._endpoints:
                raise ConfigError("metrics path %r is also a health probe's path" % metrics_config.path)
            self._endpoints[metrics_config.path] = endpoint
            if endpoint.export is not None:
                background.append(endpoint.export)
        if dashboard_config is not None:
            from .cluster.dashboard import Dashboard

            board = Dashboard(dashboard_config, service=self._service, local=self._local, runtime=self._runtime,
                              server_name=self.get_server_name, readiness=self._readiness,
                              heartbeat_interval=router_settings.heartbeat_interval)
            for path in (dashboard_config.path, dashboard_config.data_path):
                if path in self._endpoints:
                    raise ConfigError("dashboard path %r is also the path of the metrics or a probe" % path)
            self._endpoints[dashboard_config.path] = board.page_app
            self._endpoints[dashboard_config.data_path] = board.data_app
            background.append(board)
        #: WSGI app that serves WebSocket upgrades on any path (mount it with a dispatcher).
        self.wsgi_app: Optional[_LazyStartMiddleware] = (
            _LazyStartMiddleware(self, WebSocketMiddleware(self._service, None, None, self._static_files, self._endpoints))
            if self._service is not None else None
        )
        forks.register(self)
        self._life.arm_autostart()

    @property
    def _bus(self) -> Optional["CrossServerBus"]:
        return self._runtime.bus

    @property
    def _router(self) -> Optional["Router"]:
        return self._runtime.router

    # Lifecycle (cluster/lifecycle.py) -----------------------------------------------------

    def start(self) -> "WebSocketCrossServerAdapter":
        """Connect Redis, start background greenlets and (standalone) listen. Idempotent.

        Returns:
            self, so ``adapter = WebSocketCrossServerAdapter(...).start()`` works.
        """
        self._life.start()
        return self

    def _ensure_started(self) -> None:
        self._life.ensure_started()

    def serve_forever(self, *, stop_signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Start, then block until :meth:`close` (SIGTERM/SIGINT shut down gracefully with ``shutdown_code``)."""
        self._life.serve_forever(stop_signals, self.shutdown)

    def shutdown(self, *, code: Optional[int] = None, reason: Optional[str] = None, timeout: float = 5.0) -> None:
        """Graceful stop: leave the cluster, close every client with ``code``, stop everything.

        Args:
            code: the close code (default: the ``shutdown_code`` option, 1012 unless set). With
                1012 (Service Restart) each client's reason ends with its own retry hint, drawn
                in ``[0, restart_retry_window]`` (docs/operations.md, "Reconnect storms").
            reason: the close reason (default ``"server shutdown"``, ``"service restart"`` for 1012).
            timeout: how long the clients' close answers are awaited.
        """
        code = self._shutdown_code if code is None else close_code("code", code)
        if reason is None:
            reason = "service restart" if code == 1012 else "server shutdown"
        if self._life.shutdown(code, reason, timeout, retry_window=self._restart_retry_window):
            forks.unregister(self)

    def close(self, code: int = 1001, reason: str = "server shutdown", timeout: float = 5.0) -> None:
        """Same as :meth:`shutdown`, but 1001 (Going Away, no retry hint) unless a code is passed."""
        self.shutdown(code=code, reason=reason, timeout=timeout)

    def _after_fork(self) -> None:
        self._life.after_fork()

    @property
    def port(self) -> Optional[int]:
        """The port the standalone server listens on (useful with ``port=0``)."""
        return self._life.port

    def wsgi_middleware(self, app: Optional[Callable[..., Any]] = None, path: Optional[str] = "/ws") -> "_LazyStartMiddleware":
        """Wrap a WSGI app: upgrades on ``path`` come here, the rest goes to ``app``.

        Flask: ``app.wsgi_app = adapter.wsgi_middleware(app.wsgi_app, path="/ws")``.
        """
        if self._service is None:
            raise ConfigError("WebSocket is disabled: pass ws_options (e.g. {'no_server': True})")
        return _LazyStartMiddleware(self, WebSocketMiddleware(self._service, app, path, self._static_files, self._endpoints))

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

    # Sending, rooms and users (this node's part: cluster/local.py) -----------------------

    def broadcast(self, event: str, data: Any = MISSING, local_only: bool = False) -> int:
        """Send to every open client of every node (this node only with ``local_only``).

        Returns:
            how many local clients took the frame.
        """
        return self._local.broadcast(event, data, local_only)

    def to_socket_id(self, socket_id: str, event: str, data: Any = MISSING, *,
                     callback: Optional[Callable[[Result], Any]] = None, timeout: float = 5.0) -> bool:
        """Send to one user wherever it is connected. Returns True if delivered locally.

        With ``callback``, the client is asked to answer (a server request, see docs/guide.md):
        ``callback(result)`` is called exactly once, in a greenlet of its own, with
        ``Result(success=True, data=<answer>)`` or ``Result(success=False, error, error_code)``:
        ``ACK_TIMEOUT`` after ``timeout`` seconds, ``USER_NOT_FOUND`` (connected nowhere, at
        once), ``USER_DISCONNECTED`` (the connection closed before it answered, at once),
        ``TOO_MANY_PENDING_ACKS``, ``REDIS_UNAVAILABLE`` or ``WEBSOCKET_DISABLED``.

        Raises:
            TypeError: invalid ``socket_id``, ``event`` or ``callback``, or ``data`` not JSON.
            ConfigError: ``timeout`` is not a positive number of seconds (at most a day).
        """
        if callback is None:
            return self._local.to_socket_id(socket_id, event, data)
        return self._asks.send_with_callback(socket_id, event, data, callback, timeout)

    def to_socket_id_with_promise(self, socket_id: str, event: str, data: Any = MISSING, *,
                                  timeout: float = 5.0) -> "gevent.event.AsyncResult":
        """Like :meth:`to_socket_id` with a callback, returning an ``AsyncResult`` that always
        resolves to the :class:`Result` (invalid arguments: ``error_code='INVALID_ARGUMENT'``)."""
        return self._asks.send_with_promise(socket_id, event, data, timeout)

    def to_socket_id_and_wait(self, socket_id: str, event: str, data: Any = MISSING, *, timeout: float = 5.0) -> Result:
        """Blocking form of :meth:`to_socket_id_with_promise`: return its :class:`Result`."""
        result: Result = self._asks.send_with_promise(socket_id, event, data, timeout).get()
        return result

    @property
    def ack_stats(self) -> Dict[str, int]:
        """Counters of the server requests (``to_socket_id`` with a callback): sent, answered,
        timed out, ended by a disconnect, users not found, refused at a bound, ignored answer
        frames, asked of / forwarded to other nodes, late answers; ``pending`` now."""
        stats = dict(self._asks.stats)
        stats["pending"] = self._asks.pending
        return stats

    def to_socket_ids(self, socket_ids: Iterable[str], event: str, data: Any = MISSING) -> int:
        """Send to several users wherever they are. Returns how many were delivered locally."""
        return self._local.to_socket_ids(socket_ids, event, data)

    def broadcast_to_room(self, room_namespace: str, room_id: str, event: str, data: Any = MISSING, *,
                          exclude_socket_ids: Iterable[str] = (), local_only: bool = False,
                          room_destroy: bool = False, **compat: Any) -> int:
        """Send to every member of one room on every node. Returns local deliveries.

        ``room_destroy`` removes the room after sending, on every node (the original's
        ``roomDstroy`` spelling is accepted too).
        """
        return self._local.broadcast_to_room(room_namespace, room_id, event, data, exclude_socket_ids=exclude_socket_ids, local_only=local_only, room_destroy=room_destroy, **compat)

    def broadcast_raw(self, data: Union[str, bytes], *, local_only: bool = False) -> int:
        """Send one raw message to every client on every node: ``str`` as a text frame, ``bytes``
        as a binary frame, byte for byte (``TypeError`` otherwise). Returns local deliveries."""
        return self._local.broadcast_raw(data, local_only=local_only)

    def broadcast_raw_to_room(self, room_namespace: str, room_id: str, data: Union[str, bytes], *,
                              exclude_socket_ids: Iterable[str] = (), local_only: bool = False) -> int:
        """Send one raw message to every member of a room on every node (as :meth:`broadcast_raw`)."""
        return self._local.broadcast_raw_to_room(room_namespace, room_id, data, exclude_socket_ids=exclude_socket_ids, local_only=local_only)

    def channel_for_namespace(self, room_namespace: str) -> str:
        """The Redis channel of a room namespace: ``ws_prefix + room_namespace`` (one-to-one: the
        name policy refuses namespaces that would alias another channel; ``InvalidNameError``)."""
        return self._local.channel_for_namespace(room_namespace)

    def join_room(self, room_namespace: str, room_id: str, socket_id: str) -> None:
        """Add a user to a room. With Redis, returns once this node is subscribed to the
        namespace's channel on every healthy Redis node, so no room message can be missed."""
        return self._local.join_room(room_namespace, room_id, socket_id)

    def leave_room(self, room_namespace: str, room_id: str, socket_id: str) -> None:
        """Remove a user from a room; an emptied namespace is unsubscribed (``auto_unsubscribe``)."""
        return self._local.leave_room(room_namespace, room_id, socket_id)

    def remove_room(self, room_namespace: str, room_id: str) -> None:
        """Delete a room locally (every member leaves it)."""
        return self._local.remove_room(room_namespace, room_id)

    def get_socket_count_in_room(self, room_namespace: str, room_id: Optional[str] = None, *, exact_match: bool = True) -> int:
        """Local member count of a room (prefix of room ids when not ``exact_match``)."""
        return self._local.get_socket_count_in_room(room_namespace, room_id, exact_match=exact_match)

    def get_room_socket_ids(self, room_namespace: str, room_id: Optional[str] = None, *, exact_match: bool = True) -> Set[str]:
        """Local member ids (a fresh set)."""
        return self._local.get_room_socket_ids(room_namespace, room_id, exact_match=exact_match)

    def get_joined_rooms(self, socket_id: str, room_namespace: Optional[str] = None) -> Dict[str, Set[str]]:
        """``{namespace: {room_id}}`` of a user (a copy), optionally for namespaces with a prefix."""
        return self._local.get_joined_rooms(socket_id, room_namespace)

    def is_joined_room(self, socket_id: str, room_namespace: str, room_id: Optional[str] = None) -> bool:
        """Whether the user is in the room (any room of the namespace without ``room_id``)."""
        return self._local.is_joined_room(socket_id, room_namespace, room_id)

    def get_room_count(self, room_namespace: str, *, exact_match: bool = True) -> int:
        """Local number of rooms of a namespace (namespace prefix when not ``exact_match``)."""
        return self._local.get_room_count(room_namespace, exact_match=exact_match)

    def get_room_ids(self, room_namespace: str, *, exact_match: bool = True) -> List[str]:
        """Local room ids of a namespace."""
        return self._local.get_room_ids(room_namespace, exact_match=exact_match)

    def set_user_socket(self, socket_id: str, socket: WebSocketConnection) -> bool:
        """Bind a user id to a connection so rooms and direct messages find it. With
        ``duplicate_login``, an id bound elsewhere closes the older connection or refuses this one
        (then it returns False and closes it); else True."""
        return self._local.set_user_socket(socket_id, socket)

    def remove_user_socket(self, socket_id: str, socket: Optional[WebSocketConnection] = None) -> None:
        """Unbind a user id and remove it from every room.

        A late ``close`` of an older connection never removes a newer mapping: called from a
        ``close`` listener (or with ``socket``), only that socket's own mapping is removed.
        """
        return self._local.remove_user_socket(socket_id, socket)

    def get_socket_instance(self, socket_id: str) -> Optional[WebSocketConnection]:
        """The connection bound to ``socket_id`` on this node, or ``None``."""
        return self._local.get_socket_instance(socket_id)

    def get_socket_client_count(self) -> int:
        """Number of user ids bound on this node."""
        return self._local.get_socket_client_count()

    def get_local_socket_ids(self) -> List[str]:
        """User ids bound on this node."""
        return self._local.get_local_socket_ids()

    # Cross-server and cluster (cluster/crossserver.py) -------------------------------------

    def on_cross_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Register ``listener(data, callback)`` for a server-to-server event."""
        return self._cross.on_cross_server_event(event, listener, tag)

    def once_cross_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Like :meth:`on_cross_server_event`, removed after its first call."""
        return self._cross.once_cross_server_event(event, listener, tag)

    def off_cross_server_event(self, event: str, listener_or_tag: Any = _SENTINEL) -> None:
        """Remove cross-server listeners (all, one function, or by tag)."""
        return self._cross.off_cross_server_event(event, listener_or_tag)

    def emit_cross_server(self, event: str, message: Any, callback: Optional[Callable[[Result], None]] = None, *,
                          target_server: Union[None, str, Sequence[str]] = None, timeout: float = 5.0,
                          expected_responses: Optional[int] = 1, except_self: bool = False) -> Optional[str]:
        """Send a server-to-server event; ``callback(result)`` per reply and once on timeout.

        ``expected_responses=None`` expects every live node of the cluster registry.
        """
        return self._cross.emit_cross_server(event, message, callback, target_server=target_server, timeout=timeout, expected_responses=expected_responses, except_self=except_self)

    def emit_cross_server_with_promise(self, event: str, message: Any, *, target_server: Union[None, str, Sequence[str]] = None,
                                       timeout: float = 5.0, expected_responses: Optional[int] = 1,
                                       except_self: bool = False) -> "gevent.event.AsyncResult":
        """Like :meth:`emit_cross_server`, returning an ``AsyncResult`` of the final Result."""
        return self._cross.emit_cross_server_with_promise(event, message, target_server=target_server, timeout=timeout, expected_responses=expected_responses, except_self=except_self)

    def emit_cross_server_and_wait(self, event: str, message: Any, **options: Any) -> Result:
        """Blocking form of :meth:`emit_cross_server_with_promise`."""
        return self._cross.emit_cross_server_and_wait(event, message, **options)

    def delete_cross_server_callback(self, callback_id: str) -> bool:
        """Forget a pending callback; its timer is cancelled and late replies are ignored."""
        return self._cross.delete_cross_server_callback(callback_id)

    def publish_redis_message(self, channel: str, message: Dict[str, Any]) -> bool:
        """Publish a raw object on a channel (custom channels)."""
        return self._cross.publish_redis_message(channel, message)

    def manual_subscribe(self, channel: str, *, timeout: float = 5.0) -> None:
        """Subscribe a channel on every Redis node (blocks until confirmed)."""
        return self._cross.manual_subscribe(channel, timeout=timeout)

    def manual_unsubscribe(self, channel: str) -> None:
        """Unsubscribe a channel on every Redis node."""
        return self._cross.manual_unsubscribe(channel)

    def set_custom_channel_handler(self, handler: Callable[[str, Any], None]) -> None:
        """Set the single handler of messages on custom channels."""
        return self._cross.set_custom_channel_handler(handler)

    def remove_custom_channel_handler(self) -> None:
        """Remove the custom channel handler."""
        return self._cross.remove_custom_channel_handler()

    def add_redis_instance(self, config: Union[Dict[str, Any], str]) -> None:
        """Add a Redis node at run time (subscribes every wanted channel on it first)."""
        return self._cross.add_redis_instance(config)

    def remove_redis_instance(self, config_or_index: Union[Dict[str, Any], str, int]) -> None:
        """Remove a Redis node at run time (ours; the original cannot)."""
        return self._cross.remove_redis_instance(config_or_index)

    def get_healthy_redis_instances_count(self, type: str = "publisher") -> int:  # noqa: A002 - original name
        """Healthy ``'publisher'`` or ``'subscriber'`` connections."""
        return self._cross.get_healthy_redis_instances_count(type)

    def get_redis_instances_count(self) -> int:
        """Number of Redis nodes."""
        return self._cross.get_redis_instances_count()

    @property
    def bus(self) -> Optional["CrossServerBus"]:
        """The cross-server bus (``None`` without Redis)."""
        return self._cross.bus

    def get_cluster_nodes(self) -> List[Dict[str, Any]]:
        """Live nodes of the cluster registry: ``[{"server_name", "users", "rooms", "last_seen_ago",
        "synced", "websocket", ...}]``, this node first (with ``"self": True``)."""
        return self._cross.get_cluster_nodes()

    def get_cluster_stats(self) -> Dict[str, Any]:
        """Cluster-wide online users, per-node counts and room sizes (see docs for freshness)."""
        return self._cross.get_cluster_stats()

    @property
    def routing_stats(self) -> Dict[str, int]:
        """Counters of the distributed routing: messages routed to one node or the shared
        channel, forwarded, held / flushed / dropped during Redis outages, and the messages
        from other nodes that never arrived (``messages_missed``, see
        :attr:`CrossServerBus.missed_message_count`)."""
        return self._cross.routing_stats

    def get_cluster_room_socket_ids(self, room_namespace: str, room_id: str) -> Set[str]:
        """Members of a room on every live node (from the directory; see docs for freshness)."""
        return self._cross.get_cluster_room_socket_ids(room_namespace, room_id)

    def get_cluster_socket_count_in_room(self, room_namespace: str, room_id: str) -> int:
        """Number of members of a room across the cluster."""
        return self._cross.get_cluster_socket_count_in_room(room_namespace, room_id)

    def get_cluster_room_ids(self, room_namespace: str) -> Set[str]:
        """Ids of the non-empty rooms of a namespace across the cluster."""
        return self._cross.get_cluster_room_ids(room_namespace)

    def get_cluster_room_count(self, room_namespace: str) -> int:
        """Number of non-empty rooms of a namespace across the cluster."""
        return self._cross.get_cluster_room_count(room_namespace)

    def is_user_online(self, socket_id: str) -> bool:
        """Whether a user id is bound on any live node."""
        return self._cross.is_user_online(socket_id)

    def find_user_node(self, socket_id: str) -> Optional[str]:
        """Name of the node where a user id is bound, or ``None``."""
        return self._cross.find_user_node(socket_id)

    def get_server_name(self) -> Optional[str]:
        """This node's name."""
        return self._life.server_name

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
        self._local.on_connection_closed(conn, code, reason)
        self._asks.connection_closed(conn)


class _LazyStartMiddleware:
    """Starts the adapter (Redis, sweeps) on the first request of the mounted app."""

    def __init__(self, adapter: WebSocketCrossServerAdapter, inner: WebSocketMiddleware) -> None:
        self.adapter = adapter
        self.inner = inner

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not self.adapter._life.started:
            self.adapter._ensure_started()
        return self.inner(environ, start_response)


CrossServerAdapter = WebSocketCrossServerAdapter

__all__ = ["WebSocketCrossServerAdapter", "CrossServerAdapter", "Reject"]
