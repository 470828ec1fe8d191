"""What the cluster layer needs from its node: the router's settings and the local delivery it
calls back (implemented by :class:`~crossws_sync.cluster.local.LocalNode`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Protocol, Set, Tuple

if TYPE_CHECKING:
    from ..core.rooms import RoomRegistry
    from ..server.connection import WebSocketConnection
    from ..server.service import WebSocketService


@dataclass(frozen=True)
class RouterSettings:
    """What the router needs to know of the node's options."""

    server_name: str
    ws_prefix: str
    #: whether this node serves WebSocket clients (else it only routes)
    websocket: bool
    preset_namespaces: Tuple[str, ...] = ()
    heartbeat_interval: float = 2.0
    outage_buffer_size: int = 10000
    outage_buffer_age: float = 30.0
    #: ``None``, ``"close_old"`` or ``"reject_new"``, and the close code that goes with it
    duplicate_login: Optional[str] = None
    duplicate_login_code: int = 4012


class LocalDelivery(Protocol):
    """What the router reaches on this node: local delivery, rooms and sockets."""

    rooms: "RoomRegistry"

    def deliver_to_all(self, frame: bytes) -> int: ...

    def deliver_to_room(self, room_namespace: str, room_id: str, frame: bytes, excluded: Set[str]) -> int: ...

    def deliver_to_socket(self, socket_id: str, frame: bytes) -> bool: ...

    def remove_room(self, room_namespace: str, room_id: str) -> None: ...

    def get_socket_instance(self, socket_id: str) -> Optional["WebSocketConnection"]: ...

    def get_local_socket_ids(self) -> List[str]: ...


class RecoveryHost(Protocol):
    """What connection state recovery reaches on this node: its service, users and rooms."""

    service: Optional["WebSocketService"]
    rooms: "RoomRegistry"
    sockets: Dict[str, "WebSocketConnection"]

    def set_user_socket(self, socket_id: str, socket: "WebSocketConnection") -> bool: ...

    def join_room(self, room_namespace: str, room_id: str, socket_id: str) -> None: ...

    def leave_room(self, room_namespace: str, room_id: str, socket_id: str) -> None: ...

    def remove_room(self, room_namespace: str, room_id: str) -> None: ...


__all__ = ["LocalDelivery", "RecoveryHost", "RouterSettings"]
