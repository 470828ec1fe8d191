"""The cross-server and cluster part of the facade: the bus's API and the cluster registry's views.

:class:`CrossServer` delegates to the bus (:class:`~crossws_sync.bus.CrossServerBus`) or the router
(:class:`~crossws_sync.cluster.routing.Router`) of the process's
:class:`~crossws_sync.cluster.runtime.Runtime`, starting the node on first use. Registrations
(listeners, the custom channel handler) are also journaled and replayed on every bus the node
builds, so they are safe at import time, before a gunicorn fork.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, List, Optional, Sequence, Set, Union

import gevent.event

from ..core.listeners import _SENTINEL, check_event_name
from ..errors import ConfigError
from ..results import Result
from .local import LocalNode, check_id
from .runtime import Runtime

if TYPE_CHECKING:
    from ..bus.bus import CrossServerBus

_DISABLED = "Cross-server functionality is not enabled"


class CrossServer:
    """Cross-server bus and cluster registry methods of the facade.

    Its public methods are the facade's methods of the same name (their contracts are documented
    there, on :class:`~crossws_sync.WebSocketCrossServerAdapter`).

    Args:
        runtime: the bus and router of this process.
        local: this node's users and rooms (answers when there is no cluster).
        start_redis: starts the Redis side (the first Redis node added at run time).
        on_registration: called after each registration (the facade's start reminder).
        server_name: this node's name, when it has one.
    """

    def __init__(self, runtime: Runtime, local: LocalNode, *,
                 start_redis: Callable[[], None], on_registration: Callable[[], None],
                 server_name: Callable[[], Optional[str]]) -> None:
        self.runtime = runtime
        self.local = local
        #: (method, args) of every registration, replayed on each bus this node builds
        self.setup: List[Any] = []
        self._start_redis = start_redis
        self._on_registration = on_registration
        self._server_name = server_name

    # Cross-server API (delegated to the bus) ------------------------------------------------

    def _configure_bus(self, method: str, *args: Any) -> None:
        """Apply a listener/handler registration to the bus, and remember it for every bus this
        adapter will ever run (one is built per process: after a gunicorn fork, a new one).

        Registrations do not start anything themselves (the adapter's autostart does, at the
        first turn of the gevent hub), so they are safe at import time and with ``--preload``.
        """
        if not self.runtime.redis_enabled:
            return
        self.setup.append((method, args))
        if self.runtime.bus is not None:
            getattr(self.runtime.bus, method)(*args)
        self._on_registration()

    def on_cross_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        check_event_name(event)
        if not callable(listener):
            raise TypeError("listener must be a function")
        self._configure_bus("on_cross_server_event", event, listener, tag)

    def once_cross_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        check_event_name(event)
        if not callable(listener):
            raise TypeError("listener must be a function")
        self._configure_bus("once_cross_server_event", event, listener, tag)

    def off_cross_server_event(self, event: str, listener_or_tag: Any = _SENTINEL) -> None:
        check_event_name(event)
        self._configure_bus("off_cross_server_event", event, listener_or_tag)

    def emit_cross_server(self, event: str, message: Any, callback: Optional[Callable[[Result], None]] = None, *,
                          target_server: Union[None, str, Sequence[str]] = None, timeout: float = 5.0,
                          expected_responses: Optional[int] = 1, except_self: bool = False) -> Optional[str]:
        bus = self.runtime.started_bus()
        if bus is None:
            if callback is not None:
                callback(Result(success=False, error=_DISABLED, error_code="CROSS_SERVER_DISABLED"))
            return None
        return bus.emit_cross_server(event, message, callback, target_server=target_server, timeout=timeout,
                                     expected_responses=self._expected(expected_responses, target_server, except_self),
                                     except_self=except_self)

    def emit_cross_server_with_promise(self, event: str, message: Any, *, target_server: Union[None, str, Sequence[str]] = None,
                                       timeout: float = 5.0, expected_responses: Optional[int] = 1,
                                       except_self: bool = False) -> "gevent.event.AsyncResult":
        bus = self.runtime.started_bus()
        if bus is None:
            result = gevent.event.AsyncResult()
            result.set(Result(success=False, message=_DISABLED))
            return result
        return bus.emit_cross_server_with_promise(event, message, target_server=target_server, timeout=timeout,
                                                  expected_responses=self._expected(expected_responses, target_server, except_self),
                                                  except_self=except_self)

    def emit_cross_server_and_wait(self, event: str, message: Any, **options: Any) -> Result:
        result: Result = self.emit_cross_server_with_promise(event, message, **options).get()
        return result

    def _expected(self, expected: Optional[int], target_server: Any, except_self: bool) -> int:
        if expected is not None:
            return expected
        router = self.runtime.router
        if router is None:
            raise ConfigError("expected_responses=None needs the cluster registry (ws_options and redis_config)")
        count = len(router.membership.live_nodes())
        return max(1, count - 1 if except_self else count)

    def delete_cross_server_callback(self, callback_id: str) -> bool:
        bus = self.runtime.started_bus()
        return bus.delete_cross_server_callback(callback_id) if bus is not None else False

    def publish_redis_message(self, channel: str, message: Dict[str, Any]) -> bool:
        if not isinstance(channel, str) or not channel:
            raise TypeError("channel must be a non-empty string")
        bus = self.runtime.started_bus()
        return bus.publish_redis_message(channel, message) if bus is not None else False

    def manual_subscribe(self, channel: str, *, timeout: float = 5.0) -> None:
        if not isinstance(channel, str) or not channel:
            raise TypeError("The channel must be a non-empty string")
        bus = self.runtime.started_bus()
        if bus is not None:
            bus.manual_subscribe(channel, timeout=timeout)

    def manual_unsubscribe(self, channel: str) -> None:
        if not isinstance(channel, str) or not channel:
            raise TypeError("The channel must be a non-empty string")
        bus = self.runtime.started_bus()
        if bus is not None:
            bus.manual_unsubscribe(channel)

    def set_custom_channel_handler(self, handler: Callable[[str, Any], None]) -> None:
        if not callable(handler):
            raise TypeError("Handler must be a function.")
        self._configure_bus("set_custom_channel_handler", handler)

    def remove_custom_channel_handler(self) -> None:
        self._configure_bus("remove_custom_channel_handler")

    def add_redis_instance(self, config: Union[Dict[str, Any], str]) -> None:
        if not config:
            raise ConfigError("Redis configuration is required but missing.")
        if not self.runtime.redis_enabled:
            self.runtime.redis_config.append(config)
            self._start_redis()
            return
        bus = self.runtime.started_bus()
        assert bus is not None
        bus.add_redis_instance(config)

    def remove_redis_instance(self, config_or_index: Union[Dict[str, Any], str, int]) -> None:
        bus = self.runtime.started_bus()
        if bus is not None:
            bus.remove_redis_instance(config_or_index)

    def get_healthy_redis_instances_count(self, type: str = "publisher") -> int:  # noqa: A002 - original name
        if type not in ("publisher", "subscriber"):
            raise TypeError("Invalid type. Must be 'publisher' or 'subscriber'.")
        bus = self.runtime.started_bus()
        return bus.get_healthy_redis_instances_count(type) if bus is not None else 0

    def get_redis_instances_count(self) -> int:
        bus = self.runtime.started_bus()
        return bus.get_redis_instances_count() if bus is not None else 0

    @property
    def bus(self) -> Optional["CrossServerBus"]:
        return self.runtime.started_bus()

    # Cluster (distributed mode) -------------------------------------------------------------

    def get_cluster_nodes(self) -> List[Dict[str, Any]]:
        router = self.runtime.started_router()
        return router.membership.live_nodes() if router is not None else []

    def get_cluster_stats(self) -> Dict[str, Any]:
        router = self.runtime.started_router()
        if router is None:
            return {"online_users": len(self.local.sockets), "nodes": {}}
        return router.membership.cluster_stats()

    @property
    def routing_stats(self) -> Dict[str, int]:
        router = self.runtime.router
        if router is None:
            return {}
        stats = dict(router.stats)
        stats["outage_pending"] = len(router.outage)
        bus = self.runtime.started_bus()
        if bus is not None:
            stats["messages_missed"] = bus.stats["messages_missed"]
            stats["messages_late"] = bus.stats["messages_late"]
        return stats

    def get_cluster_room_socket_ids(self, room_namespace: str, room_id: str) -> Set[str]:
        router = self.runtime.started_router()
        if router is None:
            return self.local.rooms.socket_ids(room_namespace, room_id)
        return router.membership.room_members(room_namespace, room_id)

    def get_cluster_socket_count_in_room(self, room_namespace: str, room_id: str) -> int:
        return len(self.get_cluster_room_socket_ids(room_namespace, room_id))

    def get_cluster_room_ids(self, room_namespace: str) -> Set[str]:
        router = self.runtime.started_router()
        if router is None:
            return set(self.local.rooms.room_ids(room_namespace))
        return router.membership.room_ids(room_namespace)

    def get_cluster_room_count(self, room_namespace: str) -> int:
        return len(self.get_cluster_room_ids(room_namespace))

    def is_user_online(self, socket_id: str) -> bool:
        return self.find_user_node(socket_id) is not None

    def find_user_node(self, socket_id: str) -> Optional[str]:
        check_id("socketId", socket_id)
        if socket_id in self.local.sockets:
            return self._server_name() or "local"
        router = self.runtime.started_router()
        return router.membership.find_user_node(socket_id) if router is not None else None
