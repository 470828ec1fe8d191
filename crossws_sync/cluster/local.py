"""This node's users, rooms and local delivery, and the sends that reach users on any node.

:class:`LocalNode` is the part of the facade (:class:`~crossws_sync.WebSocketCrossServerAdapter`)
that owns the user id -> connection map and the rooms, writes frames to local connections, and
hands what is for other nodes to the router (:class:`~crossws_sync.cluster.routing.Router`, through
the :class:`~crossws_sync.cluster.runtime.Runtime`). The router reaches back through the same
object (its :class:`~crossws_sync.cluster.routing.LocalDelivery` protocol). Every name a caller
gives is checked by the name policy (:mod:`crossws_sync.core.names`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

import gevent

from ..core.listeners import check_event_name
from ..core.names import DEFAULT_MAX_NAME_BYTES, check_name, check_namespace, namespace_channel, valid_name
from ..core.rooms import RoomRegistry
from ..errors import ConfigError, LimitExceededError
from ..server.connection import WebSocketConnection
from ..server.service import WebSocketService
from ..wire import frames
from ..wire.events import MISSING, encode_event
from .runtime import Runtime

logger = logging.getLogger("crossws_sync.server")


def check_id(name: str, value: object) -> str:
    """``value`` if it is a non-empty string, else ``TypeError`` naming ``name``."""
    if not isinstance(value, str) or not value:
        raise TypeError("%s must be a non-empty string" % name)
    return value


@dataclass(frozen=True)
class LocalSettings:
    """The adapter's options that shape users and rooms (see the adapter's arguments)."""

    ws_prefix: str = "ws:"
    bridge_prefix: str = "csbp:"
    max_name_bytes: int = DEFAULT_MAX_NAME_BYTES
    max_rooms_per_socket: Optional[int] = 1000
    max_namespaces_per_socket: Optional[int] = 100
    preset_namespaces: Tuple[str, ...] = ()
    auto_unsubscribe: bool = True
    auto_cleanup: bool = False
    duplicate_login: Optional[str] = None
    duplicate_login_code: int = 4012


class LocalNode:
    """Users, rooms and sends of one node.

    Its public methods are the facade's methods of the same name (their contracts are documented
    there, on :class:`~crossws_sync.WebSocketCrossServerAdapter`); the ``deliver_*`` methods
    and :meth:`channel_for_namespace` are what the router calls.

    Args:
        service: the WebSocket service (``None`` when WebSocket is disabled).
        runtime: the bus and router of this process.
        settings: the options that apply here.

    Attributes:
        rooms: the local rooms.
        sockets: user id -> connection, on this node.
    """

    def __init__(self, service: Optional[WebSocketService], runtime: Runtime, settings: LocalSettings) -> None:
        self.service = service
        self.runtime = runtime
        self.settings = settings
        self.rooms = RoomRegistry()
        self.sockets: Dict[str, WebSocketConnection] = {}

    # Sending to clients ------------------------------------------------------------------

    def broadcast(self, event: str, data: Any = MISSING, local_only: bool = False) -> int:
        check_event_name(event)
        if self.service is None and not self.runtime.redis_enabled:
            return 0
        text = encode_event(event, data)
        if not local_only:
            router = self.runtime.started_router()
            if router is not None and router.recovery is not None:
                # Delivered to this node's clients too when it comes back with its position.
                router.publish_broadcast(text)
                return len(self.service.clients) if self.service is not None else 0
        sent = self.service.send_to_all(frames.encode_text(text)) if self.service is not None else 0
        if not local_only:
            router = self.runtime.started_router()
            if router is not None:
                router.publish_broadcast(text)
        return sent

    def to_socket_id(self, socket_id: str, event: str, data: Any = MISSING) -> bool:
        check_id("socketId", socket_id)
        check_event_name(event)
        if self.service is None and not self.runtime.redis_enabled:
            return False
        text = encode_event(event, data)
        conn = self.sockets.get(socket_id)
        if self.runtime.recovery is not None:
            self._name("socketId", socket_id)
            router = self.runtime.started_router()
            if router is not None:
                router.publish_unicast(socket_id, text)
            return conn is not None and conn.open
        if conn is not None and conn.open:
            return conn.send_frame(frames.encode_text(text))
        if self.runtime.redis_enabled:
            self._name("socketId", socket_id)  # it goes into a Redis envelope
        router = self.runtime.started_router()
        if router is not None:
            router.publish_unicast(socket_id, text)
        return False

    def to_socket_ids(self, socket_ids: Iterable[str], event: str, data: Any = MISSING) -> int:
        check_event_name(event)
        if (self.service is None and not self.runtime.redis_enabled) or isinstance(socket_ids, str):
            return 0
        ids = [sid for sid in socket_ids if isinstance(sid, str) and sid]
        if not ids:
            return 0
        text = encode_event(event, data)
        if self.runtime.recovery is not None:
            targets = [sid for sid in dict.fromkeys(ids) if valid_name(sid, self.settings.max_name_bytes)]
            router = self.runtime.started_router()
            if router is not None and targets:
                router.publish_multicast(targets, text)
            return sum(1 for sid in targets if sid in self.sockets and self.sockets[sid].open)
        frame = frames.encode_text(text)
        remote: List[str] = []
        sent = 0
        for socket_id in dict.fromkeys(ids):
            conn = self.sockets.get(socket_id)
            if conn is not None and conn.open:
                if conn.send_frame(frame):
                    sent += 1
            else:
                remote.append(socket_id)
        if remote:
            remote = [sid for sid in remote if valid_name(sid, self.settings.max_name_bytes)]
        if remote:
            router = self.runtime.started_router()
            if router is not None:
                router.publish_multicast(remote, text)
        return sent

    def broadcast_to_room(self, room_namespace: str, room_id: str, event: str, data: Any = MISSING, *,
                          exclude_socket_ids: Iterable[str] = (), local_only: bool = False,
                          room_destroy: bool = False, **compat: Any) -> int:
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        check_event_name(event)
        if compat:
            if set(compat) != {"roomDstroy"}:
                raise TypeError("unexpected keyword argument(s): %s" % ", ".join(sorted(compat)))
            room_destroy = bool(compat["roomDstroy"])
        if self.service is None and not self.runtime.redis_enabled:
            return 0
        excluded = set(self._name("excludeSocketIds[]", x) for x in exclude_socket_ids) if exclude_socket_ids else set()
        text = encode_event(event, data)
        if not local_only and self.runtime.recovery is not None:
            router = self.runtime.started_router()
            if router is not None:
                members = self.rooms.members(room_namespace, room_id)
                router.publish_room(room_namespace, room_id, text, list(excluded), room_destroy)
                return sum(1 for sid in members if sid not in excluded and sid in self.sockets)
        sent = self.deliver_to_room(room_namespace, room_id, frames.encode_text(text), excluded)
        if room_destroy:
            self.remove_room(room_namespace, room_id)
        if not local_only:
            router = self.runtime.started_router()
            if router is not None:
                router.publish_room(room_namespace, room_id, text, list(excluded), room_destroy)
        return sent

    def broadcast_raw(self, data: Union[str, bytes], *, local_only: bool = False) -> int:
        frame = frames.encode_data(data)
        sent = self.service.send_to_all(frame) if self.service is not None else 0
        if not local_only and self.runtime.redis_enabled:
            router = self.runtime.started_router()
            if router is not None:
                router.publish_broadcast(data if isinstance(data, str) else bytes(data))
        return sent

    def broadcast_raw_to_room(self, room_namespace: str, room_id: str, data: Union[str, bytes], *,
                              exclude_socket_ids: Iterable[str] = (), local_only: bool = False) -> int:
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        excluded = set(self._name("excludeSocketIds[]", x) for x in exclude_socket_ids) if exclude_socket_ids else set()
        sent = self.deliver_to_room(room_namespace, room_id, frames.encode_data(data), excluded)
        if not local_only and self.runtime.redis_enabled:
            router = self.runtime.started_router()
            if router is not None:
                router.publish_room(room_namespace, room_id, data if isinstance(data, str) else bytes(data),
                                          list(excluded), False)
        return sent

    def deliver_to_room(self, room_namespace: str, room_id: str, frame: bytes, excluded: Set[str]) -> int:
        """Write one pre-encoded frame to the local members of a room (used by the router too)."""
        sent = 0
        sockets = self.sockets
        for socket_id in self.rooms.members(room_namespace, room_id):
            if socket_id in excluded:
                continue
            conn = sockets.get(socket_id)
            if conn is not None and conn.send_frame(frame):
                sent += 1
        return sent

    def deliver_to_socket(self, socket_id: str, frame: bytes) -> bool:
        """Write a pre-encoded frame to a locally mapped socket (used by the router)."""
        conn = self.sockets.get(socket_id)
        return conn is not None and conn.send_frame(frame)

    def deliver_to_all(self, frame: bytes) -> int:
        """Write a pre-encoded frame to every local client (used by the router)."""
        return self.service.send_to_all(frame) if self.service is not None else 0

    # Rooms --------------------------------------------------------------------------------

    def channel_for_namespace(self, room_namespace: str) -> str:
        return namespace_channel(self._namespace(room_namespace), self.settings.ws_prefix)

    def _namespace(self, room_namespace: object) -> str:
        return check_namespace(room_namespace, self.settings.ws_prefix, self.settings.bridge_prefix, self.settings.max_name_bytes)

    def _name(self, label: str, value: object) -> str:
        return check_name(label, value, self.settings.max_name_bytes)

    def _check_room_limits(self, room_namespace: str, room_id: str, socket_id: str) -> None:
        rooms = self.rooms
        if rooms.is_joined(socket_id, room_namespace, room_id):
            return
        if self.settings.max_rooms_per_socket is not None and rooms.socket_room_count(socket_id) >= self.settings.max_rooms_per_socket:
            raise LimitExceededError("socket %r is already in %d rooms (max_rooms_per_socket)"
                                     % (socket_id, self.settings.max_rooms_per_socket), "max_rooms_per_socket", self.settings.max_rooms_per_socket)
        if (self.settings.max_namespaces_per_socket is not None and not rooms.is_joined(socket_id, room_namespace)
                and rooms.socket_namespace_count(socket_id) >= self.settings.max_namespaces_per_socket):
            raise LimitExceededError("socket %r already has rooms in %d namespaces (max_namespaces_per_socket)"
                                     % (socket_id, self.settings.max_namespaces_per_socket), "max_namespaces_per_socket",
                                     self.settings.max_namespaces_per_socket)

    def join_room(self, room_namespace: str, room_id: str, socket_id: str) -> None:
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        self._name("socketId", socket_id)
        self._check_room_limits(room_namespace, room_id, socket_id)
        self.rooms.join(room_namespace, room_id, socket_id)
        if self.runtime.redis_enabled:
            router = self.runtime.started_router()
            if router is not None:
                router.membership.room_joined(room_namespace, room_id, socket_id)
                # Always ask (idempotent): a second joiner must also wait for a pending SUBSCRIBE.
                router.namespace_used(room_namespace)
                if router.recovery is not None:
                    router.recovery.room_joined(socket_id, room_namespace, room_id)

    def leave_room(self, room_namespace: str, room_id: str, socket_id: str) -> None:
        router = self.runtime.router
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        self._name("socketId", socket_id)
        was_member = self.rooms.is_joined(socket_id, room_namespace, room_id)
        emptied = self.rooms.leave(room_namespace, room_id, socket_id)
        if was_member and router is not None:
            router.membership.room_left(room_namespace, room_id, socket_id)
            if router.recovery is not None:
                router.recovery.rooms_left([socket_id], room_namespace, room_id)
        if emptied:
            self._namespace_emptied(room_namespace)

    def remove_room(self, room_namespace: str, room_id: str) -> None:
        router = self.runtime.router
        self._namespace(room_namespace)
        self._name("roomId", room_id)
        members = list(self.rooms.members(room_namespace, room_id)) if router is not None else []
        emptied = self.rooms.remove_room(room_namespace, room_id)
        if router is not None:
            for socket_id in members:
                router.membership.room_left(room_namespace, room_id, socket_id)
            if router.recovery is not None:
                router.recovery.rooms_left(members, room_namespace, room_id)
        if emptied:
            self._namespace_emptied(room_namespace)

    def _namespace_emptied(self, room_namespace: str) -> None:
        router = self.runtime.router
        if router is not None and self.settings.auto_unsubscribe and room_namespace not in self.settings.preset_namespaces:
            router.namespace_unused(room_namespace)

    def get_socket_count_in_room(self, room_namespace: str, room_id: Optional[str] = None, *, exact_match: bool = True) -> int:
        self._name("roomNamespace", room_namespace)
        return self.rooms.socket_count(room_namespace, room_id, exact_match=exact_match)

    def get_room_socket_ids(self, room_namespace: str, room_id: Optional[str] = None, *, exact_match: bool = True) -> Set[str]:
        self._name("roomNamespace", room_namespace)
        return self.rooms.socket_ids(room_namespace, room_id, exact_match=exact_match)

    def get_joined_rooms(self, socket_id: str, room_namespace: Optional[str] = None) -> Dict[str, Set[str]]:
        self._name("socketId", socket_id)
        return self.rooms.joined_rooms(socket_id, room_namespace)

    def is_joined_room(self, socket_id: str, room_namespace: str, room_id: Optional[str] = None) -> bool:
        if not isinstance(socket_id, str) or not isinstance(room_namespace, str):
            return False
        return self.rooms.is_joined(socket_id, room_namespace, room_id)

    def get_room_count(self, room_namespace: str, *, exact_match: bool = True) -> int:
        self._name("roomNamespace", room_namespace)
        return self.rooms.room_count(room_namespace, exact_match=exact_match)

    def get_room_ids(self, room_namespace: str, *, exact_match: bool = True) -> List[str]:
        self._name("roomNamespace", room_namespace)
        return self.rooms.room_ids(room_namespace, exact_match=exact_match)

    # Socket mapping -----------------------------------------------------------------------

    def set_user_socket(self, socket_id: str, socket: WebSocketConnection) -> bool:
        router = self.runtime.router
        self._name("socketId", socket_id)
        if socket is None:
            raise ConfigError("Invalid socket object.")
        previous = self.sockets.get(socket_id)
        local_dup = previous is not None and previous is not socket and previous.open
        remote_dup = bool(router.membership.duplicate_owner(socket_id)) if router is not None else False
        if self.settings.duplicate_login and (local_dup or remote_dup):
            if self.settings.duplicate_login == "reject_new":
                socket.close(self.settings.duplicate_login_code, "duplicate login")
                return False
            if local_dup and previous is not None:
                previous.close(self.settings.duplicate_login_code, "logged in elsewhere")
            if remote_dup and router is not None:
                router.membership.kick_elsewhere(socket_id, self.settings.duplicate_login_code)
        self.sockets[socket_id] = socket
        if isinstance(socket, WebSocketConnection):
            socket.socket_id = socket_id
        if router is not None:
            router.membership.user_mapped(socket_id)
            if router.recovery is not None and isinstance(socket, WebSocketConnection):
                router.recovery.user_mapped(socket, socket_id)
        return True

    def remove_user_socket(self, socket_id: str, socket: Optional[WebSocketConnection] = None) -> None:
        router = self.runtime.router
        check_id("socketId", socket_id)
        closing = socket or (self.service.closing.get(gevent.getcurrent()) if self.service is not None else None)
        current = self.sockets.get(socket_id)
        if closing is not None and current is not None and current is not closing:
            logger.debug("remove_user_socket(%r) skipped: mapped to a newer connection", socket_id)
            return
        self.sockets.pop(socket_id, None)
        if router is not None:
            for namespace, room_ids in self.rooms.joined_rooms(socket_id).items():
                for room_id in room_ids:
                    router.membership.room_left(namespace, room_id, socket_id)
        emptied = self.rooms.remove_socket(socket_id)
        if emptied and router is not None and self.settings.auto_unsubscribe:
            presets = self.settings.preset_namespaces
            router.namespaces_unused([ns for ns in emptied if ns not in presets])
        if router is not None:
            router.membership.user_unmapped(socket_id)

    def get_socket_instance(self, socket_id: str) -> Optional[WebSocketConnection]:
        check_id("socketId", socket_id)
        return self.sockets.get(socket_id)

    def get_socket_client_count(self) -> int:
        return len(self.sockets)

    def get_local_socket_ids(self) -> List[str]:
        return list(self.sockets)

    def on_connection_closed(self, conn: WebSocketConnection, code: int, reason: str) -> None:
        router = self.runtime.router
        socket_id = conn.socket_id
        if socket_id is None:
            return
        if router is not None and router.recovery is not None:
            router.recovery.closed(conn)
        if self.settings.auto_cleanup:
            self.remove_user_socket(socket_id, conn)
        elif router is not None and self.sockets.get(socket_id) is conn:
            # The app keeps the mapping (the original's default), but a closed socket must not
            # claim the user in the cluster: other nodes would keep sending there.
            router.membership.user_unmapped(socket_id)




__all__ = ["LocalNode", "LocalSettings", "check_id"]
