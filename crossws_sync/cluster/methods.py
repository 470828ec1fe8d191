"""The adapter's cross-server and cluster methods (a mixin of ``WebSocketCrossServerAdapter``).

Everything here delegates to the bus (:class:`~crossws_sync.bus.CrossServerBus`) or the router
(:class:`~crossws_sync.distributed.Router`) once the adapter runs. Registrations (listeners, the
custom channel handler) are also journaled on the adapter and replayed on every bus it builds, so
they are safe at import time, before a gunicorn fork.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, List, Optional, Sequence, Set, Union

import gevent.event

from ..errors import ConfigError
from ..core.listeners import _SENTINEL, check_event_name
from ..results import Result
from ..core.rooms import RoomRegistry

if TYPE_CHECKING:
    from ..bus.bus import CrossServerBus
    from .routing import Router

_DISABLED = "Cross-server functionality is not enabled"


def _check_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("%s must be a non-empty string" % name)
    return value


class CrossServerMethods:
    """Cross-server bus and cluster registry methods of the adapter."""

    _redis_config: List[Any]
    _bus: Optional["CrossServerBus"]
    _bus_setup: List[Any]
    _router: Optional["Router"]
    _started: bool
    _sockets: Dict[str, Any]
    _server_name: Optional[str]
    rooms: RoomRegistry

    def _ensure_started(self) -> None:  # provided by the adapter
        raise NotImplementedError

    def start(self) -> Any:  # provided by the adapter
        raise NotImplementedError

    def _start_bus(self) -> None:  # provided by the adapter
        raise NotImplementedError

    def _on_registration(self) -> None:  # provided by the adapter
        raise NotImplementedError

    # Cross-server API (delegated to the bus) ------------------------------------------------

    def _bus_or_none(self) -> Optional["CrossServerBus"]:
        if not self._redis_config:
            return None
        self._ensure_started()
        return self._bus

    def _configure_bus(self, method: str, *args: Any) -> None:
        """Apply a listener/handler registration to the bus, and remember it for every bus this
        adapter will ever run (one is built per process: after a gunicorn fork, a new one).

        Registrations do not start anything themselves (the adapter's autostart does, at the
        first turn of the gevent hub), so they are safe at import time and with ``--preload``.
        """
        if not self._redis_config:
            return
        self._bus_setup.append((method, args))
        if self._bus is not None:
            getattr(self._bus, method)(*args)
        self._on_registration()

    def on_cross_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Register ``listener(data, callback)`` for a server-to-server event."""
        check_event_name(event)
        if not callable(listener):
            raise TypeError("listener must be a function")
        self._configure_bus("on_cross_server_event", event, listener, tag)

    def once_cross_server_event(self, event: str, listener: Callable[..., Any], tag: Optional[Hashable] = None) -> None:
        """Like :meth:`on_cross_server_event`, removed after its first call."""
        check_event_name(event)
        if not callable(listener):
            raise TypeError("listener must be a function")
        self._configure_bus("once_cross_server_event", event, listener, tag)

    def off_cross_server_event(self, event: str, listener_or_tag: Any = _SENTINEL) -> None:
        """Remove cross-server listeners (all, one function, or by tag)."""
        check_event_name(event)
        self._configure_bus("off_cross_server_event", event, listener_or_tag)

    def emit_cross_server(self, event: str, message: Any, callback: Optional[Callable[[Result], None]] = None, *,
                          target_server: Union[None, str, Sequence[str]] = None, timeout: float = 5.0,
                          expected_responses: Optional[int] = 1, except_self: bool = False) -> Optional[str]:
        """Send a server-to-server event; ``callback(result)`` per reply and once on timeout.

        ``expected_responses=None`` expects every live node of the cluster registry.
        """
        bus = self._bus_or_none()
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
        """Like :meth:`emit_cross_server`, returning an ``AsyncResult`` of the final Result."""
        bus = self._bus_or_none()
        if bus is None:
            result = gevent.event.AsyncResult()
            result.set(Result(success=False, message=_DISABLED))
            return result
        return bus.emit_cross_server_with_promise(event, message, target_server=target_server, timeout=timeout,
                                                  expected_responses=self._expected(expected_responses, target_server, except_self),
                                                  except_self=except_self)

    def emit_cross_server_and_wait(self, event: str, message: Any, **options: Any) -> Result:
        """Blocking form of :meth:`emit_cross_server_with_promise`."""
        return self.emit_cross_server_with_promise(event, message, **options).get()

    def _expected(self, expected: Optional[int], target_server: Any, except_self: bool) -> int:
        if expected is not None:
            return expected
        if self._router is None:
            raise ConfigError("expected_responses=None needs the cluster registry (ws_options and redis_config)")
        count = len(self._router.live_nodes())
        return max(1, count - 1 if except_self else count)

    def delete_cross_server_callback(self, callback_id: str) -> bool:
        """Forget a pending callback; its timer is cancelled and late replies are ignored."""
        bus = self._bus_or_none()
        return bus.delete_cross_server_callback(callback_id) if bus is not None else False

    def publish_redis_message(self, channel: str, message: Dict[str, Any]) -> bool:
        """Publish a raw object on a channel (custom channels)."""
        if not isinstance(channel, str) or not channel:
            raise TypeError("channel must be a non-empty string")
        bus = self._bus_or_none()
        return bus.publish_redis_message(channel, message) if bus is not None else False

    def manual_subscribe(self, channel: str, *, timeout: float = 5.0) -> None:
        """Subscribe a channel on every Redis node (blocks until confirmed)."""
        if not isinstance(channel, str) or not channel:
            raise TypeError("The channel must be a non-empty string")
        bus = self._bus_or_none()
        if bus is not None:
            bus.manual_subscribe(channel, timeout=timeout)

    def manual_unsubscribe(self, channel: str) -> None:
        """Unsubscribe a channel on every Redis node."""
        if not isinstance(channel, str) or not channel:
            raise TypeError("The channel must be a non-empty string")
        bus = self._bus_or_none()
        if bus is not None:
            bus.manual_unsubscribe(channel)

    def set_custom_channel_handler(self, handler: Callable[[str, Any], None]) -> None:
        """Set the single handler of messages on custom channels."""
        if not callable(handler):
            raise TypeError("Handler must be a function.")
        self._configure_bus("set_custom_channel_handler", handler)

    def remove_custom_channel_handler(self) -> None:
        """Remove the custom channel handler."""
        self._configure_bus("remove_custom_channel_handler")

    def add_redis_instance(self, config: Union[Dict[str, Any], str]) -> None:
        """Add a Redis node at run time (subscribes every wanted channel on it first)."""
        if not config:
            raise ConfigError("Redis configuration is required but missing.")
        if not self._redis_config:
            self._redis_config.append(config)
            self.start() if not self._started else self._start_bus()
            return
        bus = self._bus_or_none()
        assert bus is not None
        bus.add_redis_instance(config)

    def remove_redis_instance(self, config_or_index: Union[Dict[str, Any], str, int]) -> None:
        """Remove a Redis node at run time (ours; the original cannot)."""
        bus = self._bus_or_none()
        if bus is not None:
            bus.remove_redis_instance(config_or_index)

    def get_healthy_redis_instances_count(self, type: str = "publisher") -> int:  # noqa: A002 - original name
        """Healthy ``'publisher'`` or ``'subscriber'`` connections."""
        if type not in ("publisher", "subscriber"):
            raise TypeError("Invalid type. Must be 'publisher' or 'subscriber'.")
        bus = self._bus_or_none()
        return bus.get_healthy_redis_instances_count(type) if bus is not None else 0

    def get_redis_instances_count(self) -> int:
        """Number of Redis nodes."""
        bus = self._bus_or_none()
        return bus.get_redis_instances_count() if bus is not None else 0

    @property
    def bus(self) -> Optional["CrossServerBus"]:
        """The cross-server bus (``None`` without Redis)."""
        return self._bus_or_none()

    # Cluster (distributed mode) -------------------------------------------------------------

    def get_cluster_nodes(self) -> List[Dict[str, Any]]:
        """Live nodes of the cluster registry: ``[{"server_name", "users", "rooms", "last_seen_ago",
        "synced", "websocket", ...}]``, this node first (with ``"self": True``)."""
        self._ensure_started()
        return self._router.live_nodes() if self._router is not None else []

    def get_cluster_stats(self) -> Dict[str, Any]:
        """Cluster-wide online users, per-node counts and room sizes (see docs for freshness)."""
        self._ensure_started()
        if self._router is None:
            return {"online_users": len(self._sockets), "nodes": {}}
        return self._router.cluster_stats()

    @property
    def routing_stats(self) -> Dict[str, int]:
        """Counters of the distributed routing: messages routed to one node or the shared
        channel, forwarded, held / flushed / dropped during Redis outages, and the messages
        from other nodes that never arrived (``messages_missed``, see
        :attr:`CrossServerBus.missed_message_count`)."""
        if self._router is None:
            return {}
        stats = dict(self._router.stats)
        stats["outage_pending"] = len(self._router.outage)
        bus = self._bus_or_none()
        if bus is not None:
            stats["messages_missed"] = bus.stats["messages_missed"]
            stats["messages_late"] = bus.stats["messages_late"]
        return stats

    def get_cluster_room_socket_ids(self, room_namespace: str, room_id: str) -> Set[str]:
        """Members of a room on every live node (from the directory; see docs for freshness)."""
        self._ensure_started()
        if self._router is None:
            return self.rooms.socket_ids(room_namespace, room_id)
        return self._router.room_members(room_namespace, room_id)

    def get_cluster_socket_count_in_room(self, room_namespace: str, room_id: str) -> int:
        """Number of members of a room across the cluster."""
        return len(self.get_cluster_room_socket_ids(room_namespace, room_id))

    def get_cluster_room_ids(self, room_namespace: str) -> Set[str]:
        """Ids of the non-empty rooms of a namespace across the cluster."""
        self._ensure_started()
        if self._router is None:
            return set(self.rooms.room_ids(room_namespace))
        return self._router.room_ids(room_namespace)

    def get_cluster_room_count(self, room_namespace: str) -> int:
        """Number of non-empty rooms of a namespace across the cluster."""
        return len(self.get_cluster_room_ids(room_namespace))

    def is_user_online(self, socket_id: str) -> bool:
        """Whether a user id is bound on any live node."""
        return self.find_user_node(socket_id) is not None

    def find_user_node(self, socket_id: str) -> Optional[str]:
        """Name of the node where a user id is bound, or ``None``."""
        _check_id("socketId", socket_id)
        if socket_id in self._sockets:
            return self._server_name or "local"
        self._ensure_started()
        return self._router.find_user_node(socket_id) if self._router is not None else None
