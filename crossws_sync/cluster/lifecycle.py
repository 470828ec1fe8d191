"""Starting and stopping one node: its Redis side, its listener, autostart, shutdown, forks.

With ``redis_config``, the Redis side starts by itself, as the original connects in its
constructor: :meth:`Lifecycle.arm_autostart` schedules a start at the process's first turn of the
gevent hub (any blocking call of a monkey-patched program). A gunicorn master (``--preload``)
never starts it; each worker does after the fork. After any fork the child drops what it
inherited and starts afresh (:meth:`Lifecycle.after_fork`). The standalone listener starts with
:meth:`Lifecycle.start`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import gevent
import gevent.event
import gevent.lock

from ..config import RecoveryOptions
from ..config import resolve_server_name
from ..errors import ConfigError
from ..server.service import WebSocketService
from ..server.wsgi import HeadGuard, WebSocketMiddleware, make_server
from .contracts import RouterSettings
from .crossserver import CrossServer
from .local import LocalNode
from .runtime import Runtime

if TYPE_CHECKING:
    from .routing import Router

logger = logging.getLogger("crossws_sync.server")

#: Seconds after the first cross-server registration of an ``autostart=False`` node that is
#: still not started, before a warning names the fix.
NOT_STARTED_WARNING_DELAY = 5.0


class Lifecycle:
    """The start, the stop and the forks of one node (the facade's :meth:`start`, :meth:`shutdown`).

    Args:
        runtime: the process's bus and router, set here when the Redis side starts.
        local: this node's users and rooms (the router's local delivery).
        cross: the cross-server part (its registrations are replayed on every new bus).
        service: the WebSocket service, or ``None``.
        listen: the parsed ``ws_options`` (``None``: no WebSocket).
        server_name: the template of the node's name (``{pid}`` is resolved in each process).
        bus_options: the bus's keyword arguments.
        router_settings: the router's settings, without the resolved name.
        head_guard / static_files: for the standalone listener.
        endpoints: ``{path: wsgi_app}`` served before the app (metrics, probes).
        background: objects with ``start()`` and ``stop()`` started with the node, in the
            process that serves (after a fork: in each worker), and stopped with it (the list is
            read at each start: parts may be added after construction).
        autostart: start the Redis side at the first turn of the hub.
        on_router: called with each router this node builds, before it starts (to add handlers).
    """

    def __init__(self, *, runtime: Runtime, local: LocalNode, cross: CrossServer, service: Optional[WebSocketService],
                 listen: Any, server_name: Optional[str], bus_options: Dict[str, Any],
                 router_settings: RouterSettings, head_guard: HeadGuard, static_files: Dict[str, Any],
                 autostart: bool, recovery: Optional[RecoveryOptions] = None,
                 on_router: Optional[Callable[["Router"], None]] = None,
                 endpoints: Optional[Dict[str, Any]] = None, background: Optional[List[Any]] = None) -> None:
        self.runtime = runtime
        self.local = local
        self.cross = cross
        self.service = service
        self.listen = listen
        self.server_name_template = server_name
        #: this node's name (resolved again when the Redis side starts, in the process that runs it)
        self.server_name: Optional[str] = (
            resolve_server_name(server_name) if (server_name is not None or runtime.redis_enabled) else None)
        self.bus_options = bus_options
        self.router_settings = router_settings
        self.head_guard = head_guard
        self.static_files = static_files
        self.autostart = autostart
        self.recovery_options = recovery
        self.on_router = on_router
        self.endpoints: Dict[str, Any] = endpoints if endpoints is not None else {}
        self.background: List[Any] = background if background is not None else []
        self.http_server: Any = None
        self.started = False
        self.closed = False
        self.stopped = gevent.event.Event()
        self._lock = gevent.lock.RLock()
        self._not_started_warning: Optional[gevent.Greenlet] = None

    @property
    def port(self) -> Optional[int]:
        """The port the standalone server listens on (the chosen one with ``port=0``)."""
        if self.http_server is not None:
            return int(self.http_server.server_port)
        return self.listen.port if self.listen else None

    def start(self) -> None:
        """Connect Redis, start the background greenlets and (standalone) listen. Idempotent.

        Raises:
            ConfigError: the node is closed, or the listener could not start.
        """
        with self._lock:
            if self.started:
                return
            if self.closed:
                raise ConfigError("adapter is closed; create a new one")
            self.started = True
            if self.runtime.redis_enabled and self.runtime.bus is None:
                self.start_bus()
            if self.service is not None:
                self.service.start_background()
                self._listen()
            for part in self.background:
                part.start()

    def _listen(self) -> None:
        listen, service = self.listen, self.service
        if listen is None or service is None or listen.no_server or listen.port is None:
            return
        app = WebSocketMiddleware(service, listen.app, listen.path, self.static_files, self.endpoints)
        self.http_server = make_server(listen.host, listen.port, app, ssl_args=listen.ssl_args,
                                       backlog=listen.backlog, head_guard=self.head_guard)
        try:
            self.http_server.start()
        except Exception as exc:
            service.system_events.emit("server-error", exc)
            raise ConfigError("Failed to start WebSocket server: %s" % exc) from exc
        logger.info("listening on %s:%d", listen.host, self.port)
        service.system_events.emit("listening")

    def start_bus(self) -> None:
        """Build this process's router and bus, replay the registrations, join the cluster."""
        from ..bus.bus import CrossServerBus
        from .routing import Router

        # Resolved again here, in the process that runs the node (after a gunicorn fork, {pid} differs).
        self.server_name = resolve_server_name(self.server_name_template)
        router = Router(self.local, replace(self.router_settings, server_name=self.server_name or ""))
        bus = CrossServerBus(server_name=self.server_name, redis_config=self.runtime.redis_config,
                             initial_channels=router.initial_channels(), ws_message_handler=router.on_ws_message,
                             **self.bus_options)
        if self.on_router is not None:
            self.on_router(router)
        self.runtime.bus, self.runtime.router = bus, router
        if self.recovery_options is not None:
            self._start_recovery(bus, router, self.recovery_options)
        for method, args in self.cross.setup:
            getattr(bus, method)(*args)
        router.start(bus)

    def _start_recovery(self, bus: Any, router: Any, options: RecoveryOptions) -> None:
        """Connection state recovery, with the first Redis node as the history node."""
        from ..bus.history import HistoryStore
        from .recovery import Recovery

        history_node = bus.redis_nodes[0]
        store: Any
        if getattr(history_node, "is_cluster", False):  # a Redis Cluster: keys routed by slot
            from ..bus.cluster_history import ClusterHistoryStore
            store = ClusterHistoryStore(history_node, prefix=self.router_settings.ws_prefix,
                                        history_size=options.history_size,
                                        stream_ttl=options.max_disconnection + options.refresh_interval,
                                        replicas=options.history_replicas, replica_timeout=options.replica_timeout)
        else:
            store = HistoryStore(history_node.settings, open_connection=history_node.open_connection,
                                 label=history_node.label, prefix=self.router_settings.ws_prefix,
                                 history_size=options.history_size,
                                 stream_ttl=options.max_disconnection + options.refresh_interval,
                                 replicas=options.history_replicas, replica_timeout=options.replica_timeout)
        recovery = Recovery(options, store=store, codec=bus.codec, local=self.local, hold=router.outage.hold,
                            backlog=lambda: len(router.outage))
        router.recovery = self.runtime.recovery = recovery
        if self.service is not None:
            self.service.recover = recovery.recover
            self.service.recovery_wait = options.wait_timeout

    def start_redis(self) -> None:
        """Start the Redis side now (the first Redis node was added at run time)."""
        if not self.started:
            self.start()
        else:
            self.start_bus()

    def ensure_started(self) -> None:
        """Start unless started or closed (first use starts the node)."""
        if not self.started and not self.closed:
            self.start()

    def arm_autostart(self) -> None:
        """With Redis and ``autostart``, start the Redis side at the first turn of the hub."""
        if self.runtime.redis_enabled and self.autostart and not self.closed:
            gevent.spawn_later(0, self._auto_start)

    def _auto_start(self) -> None:
        # Not in a gunicorn master: it forks workers, which start their own (their worker class
        # calls forks.start_all).
        if self.started or self.closed:
            return
        if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/") and "CROSSWS_WORKER_ID" not in os.environ:
            return
        try:
            with self._lock:
                if not self.started and not self.closed and self.runtime.bus is None:
                    self.start_bus()
        except Exception:
            logger.exception("the adapter could not start its Redis side by itself; call start() to see why")

    def on_registration(self) -> None:
        """A cross-server registration: without autostart, warn later if still not started."""
        if not self.autostart and self.runtime.bus is None and self._not_started_warning is None:
            self._not_started_warning = gevent.spawn_later(NOT_STARTED_WARNING_DELAY, self._warn_if_not_started)

    def _warn_if_not_started(self) -> None:
        if self.runtime.bus is None and not self.closed:
            logger.warning("cross-server listeners are registered but the adapter was not started after %.0f s "
                           "(autostart=False): call adapter.start() (or serve_forever()) so this node "
                           "receives cross-server events", NOT_STARTED_WARNING_DELAY)

    def serve_forever(self, stop_signals: Sequence[int], shutdown: Callable[[], None]) -> None:
        """Start, then block until stopped; each of ``stop_signals`` calls ``shutdown``."""
        self.start()
        handlers = [gevent.signal_handler(sig, lambda: gevent.spawn(shutdown)) for sig in stop_signals]
        try:
            self.stopped.wait()
        finally:
            for handler in handlers:
                handler.cancel()

    def shutdown(self, code: int, reason: str, timeout: float, retry_window: Optional[float] = None) -> bool:
        """Graceful stop: leave the cluster, close every client with ``code``, stop everything.

        ``retry_window``: with code 1012, the window of the clients' jittered retry hints.

        Returns:
            False when the node was already closed.
        """
        if self.closed:
            return False
        self.closed = True
        router, bus, service = self.runtime.router, self.runtime.bus, self.service
        if router is not None:
            router.leave_cluster()
        if self.http_server is not None:
            self.http_server.stop_accepting()
        if service is not None:
            service.close_all(code, reason, timeout, retry_window=retry_window)
            service.stop_background()
        if self.http_server is not None:
            self.http_server.stop(timeout=1)
            self.http_server = None
        if router is not None:
            router.stop()
        if self.runtime.recovery is not None:
            self.runtime.recovery.close()
        if bus is not None:
            bus.close()
        for part in self.background:
            part.stop()
        if service is not None:
            service.system_events.emit("ws-server-close")
        self.stopped.set()
        return True

    def after_fork(self) -> None:
        """In a forked child: drop the parent's greenlets and Redis connections (they are closed
        in the parent only: a Redis connection is shut down only in the process that opened it)
        and start afresh."""
        bus, router = self.runtime.bus, self.runtime.router
        if router is not None:
            router.abandon()
        if bus is not None:
            bus.abandon()
        if self.runtime.recovery is not None:
            self.runtime.recovery.close()
            self.runtime.recovery = None
        self.runtime.bus = self.runtime.router = None
        self.http_server = None
        self.started = False
        self.arm_autostart()


__all__ = ["Lifecycle", "NOT_STARTED_WARNING_DELAY"]
