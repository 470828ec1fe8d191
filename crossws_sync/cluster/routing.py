"""Distributed WebSocket routing and the cluster registry (the adapter with both Redis and WebSocket).

Channels (defaults ``ws:`` / ``csbp:``):

============================  ===========================================  ==========================
channel                       carries                                      received by
============================  ===========================================  ==========================
``ws:broadcast``              ``broadcast`` (original envelope)            every WebSocket node
``ws:private_socket``         unicast/multicast to users whose node is     every WebSocket node
                              unknown (original envelope; Node nodes)
``ws:<namespace>``            ``broadcast_to_room`` (original envelope,    nodes with local members
                              plus ``roomDestroy`` when destroying)        in the namespace, presets
``ws:_crossws.node:<name>``   unicast/multicast to users known to be on    that node only
                              ``<name>``; snapshots and kicks (ours)
``ws:_crossws.cluster``       heartbeats, directory deltas, hello/bye      every crossws_sync node
============================  ===========================================  ==========================

Original Node.js nodes never subscribe the ``_crossws`` channels and ignore the additive field,
so a mixed cluster works: users on Node nodes are unknown to the directory and are reached
through the shared private channel exactly as the original does.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol, Set, Tuple, Union

import gevent

from ..wire import frames
from ..core.directory import ClusterDirectory, SnapshotAssembler, snapshot_parts
from ..wire.envelope import data_of, raw_data, broadcast_channel, private_socket_channel, ws_broadcast, ws_multicast, ws_room, ws_unicast
from ..errors import CrossWSError
from ..core.names import RESERVED_NAMESPACE_PREFIX
from .outage import OutageBuffer
from ..io.supervisor import supervise

if TYPE_CHECKING:
    from ..bus.bus import CrossServerBus
    from ..core.rooms import RoomRegistry
    from ..server.connection import WebSocketConnection

logger = logging.getLogger("crossws_sync.cluster")

PROTOCOL_VERSION = 1


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


class Router:
    """Routes the node's sends across nodes and keeps the cluster directory.

    Args:
        local: local delivery, rooms and sockets (the adapter).
        settings: the node's name, prefix and routing options.
    """

    def __init__(self, local: LocalDelivery, settings: RouterSettings) -> None:
        self.local = local
        self.settings = settings
        self.name = settings.server_name
        prefix = settings.ws_prefix
        self.websocket = settings.websocket
        self.cluster_channel = prefix + RESERVED_NAMESPACE_PREFIX + ".cluster"
        self.node_channel = self.node_channel_of(self.name)
        self.private_channel = private_socket_channel(prefix)
        self.broadcast_channel = broadcast_channel(prefix)
        self.directory = ClusterDirectory()
        #: snapshots come in parts (each far under the bus cap); deltas wait while one is assembled
        self.assembler = SnapshotAssembler()
        self._snapshots_sending: Set[str] = set()
        self.interval = settings.heartbeat_interval
        self.expiry = self.interval * 3 + 0.5
        self._bus: Optional["CrossServerBus"] = None
        self._seq = 0
        self._ops: List[List[Any]] = []
        self._mapped_at: Dict[str, float] = {}
        self._flusher: Optional[gevent.Greenlet] = None
        self._heart: Optional[gevent.Greenlet] = None
        self._stopped = False
        self._left = False
        self._handlers: Dict[str, Callable[[Dict[str, Any]], None]] = {
            "hb": self._on_heartbeat, "delta": self._on_delta, "hello": self._on_hello, "bye": self._on_bye,
            "sync": self._on_sync_request, "snap": self._on_snapshot, "uni": self._on_node_unicast,
            "kick": self._on_kick,
        }
        self.stats = {"node_unicasts": 0, "shared_unicasts": 0, "forwarded": 0, "snapshots_sent": 0,
                      "snapshots_received": 0, "bad_messages": 0, "routing_messages_in": 0,
                      "outage_buffered": 0, "outage_flushed": 0, "outage_dropped": 0}
        #: messages for users held while no Redis node is healthy (see outage.py)
        self.outage = OutageBuffer(size=settings.outage_buffer_size, age=settings.outage_buffer_age, stats=self.stats,
                                   bus=lambda: self._bus, stopped=lambda: self._stopped)

    def channel_for_namespace(self, namespace: str) -> str:
        """The Redis channel of a room namespace (``ws:`` + namespace, as the original)."""
        return self.settings.ws_prefix + namespace

    def node_channel_of(self, name: str) -> str:
        return self.settings.ws_prefix + RESERVED_NAMESPACE_PREFIX + ".node:" + name

    # Lifecycle -----------------------------------------------------------------------------

    def initial_channels(self) -> List[str]:
        """Channels to subscribe from the start (before any traffic is relied upon)."""
        channels = [self.cluster_channel, self.node_channel]
        if self.websocket:
            channels += [self.private_channel, self.broadcast_channel]
            channels += [self.channel_for_namespace(ns) for ns in self.settings.preset_namespaces]
        return channels

    def start(self, bus: "CrossServerBus") -> None:
        self._bus = bus
        now = time.time()
        for socket_id in self.local.get_local_socket_ids():  # mapped before the bus started
            self._mapped_at.setdefault(socket_id, now)
        # Already in initial_channels(); subscribe() here waits for the confirmation, so peers'
        # snapshots answering our hello cannot arrive before we listen.
        for channel in (self.node_channel, self.cluster_channel):
            try:
                bus.subscribe(channel)
            except CrossWSError as exc:  # Redis down at start: the bus resubscribes when it is back
                logger.warning("could not subscribe %s yet: %s", channel, exc)
        self._publish_cluster({"t": "hello", "v": PROTOCOL_VERSION})
        self._publish_cluster(self._heartbeat_message())
        self._heart = gevent.spawn(supervise, self._heartbeat_loop, "cluster heartbeat", logger,
                                   stopped=lambda: self._stopped)

    def leave_cluster(self) -> None:
        """Say goodbye so peers drop this node at once (graceful shutdown).

        The goodbye is the last message on the cluster channel: a heartbeat, delta or snapshot
        sent later (clients closing during the shutdown unmap users) would register the node
        again on every peer until it expired.
        """
        if self._bus is not None and not self._stopped and not self._left:
            self._flush()
            try:  # waits for Redis: the bus is closed right after, and drops what is still queued
                self._bus.publish(self.cluster_channel, {"t": "bye", "node": self.name, "senderServer": self.name})
            except CrossWSError as exc:
                logger.warning("goodbye on %s failed: %s", self.cluster_channel, exc)
            self._left = True

    def abandon(self) -> None:
        """In a forked child: stop the inherited loops, say nothing to the cluster."""
        self._left = True
        self.stop()

    def stop(self) -> None:
        self._stopped = True
        for greenlet in (self._heart, self._flusher):
            if greenlet is not None:
                greenlet.kill(block=False)
        self.outage.stop()

    def _heartbeat_loop(self) -> None:
        while not self._stopped:
            gevent.sleep(self.interval)
            self._publish_cluster(self._heartbeat_message())
            for name in self.directory.expire(time.time(), self.expiry):
                self.assembler.forget(name)
                logger.info("node %s left the cluster (no heartbeat for %.1fs)", name, self.expiry)

    def _heartbeat_message(self) -> Dict[str, Any]:
        return {"t": "hb", "seq": self._seq, "ws": self.websocket, "users": len(self._mapped_at)}

    # Publishing helpers --------------------------------------------------------------------

    def _publish(self, channel: str, message: Dict[str, Any]) -> bool:
        """Publish a cluster-control message (never buffered: the directory heals itself)."""
        bus = self._bus
        if bus is None:
            return False
        try:
            # Pipelined: a handler that sends many messages does not wait a Redis round trip for
            # each; a failed write is re-published on another healthy node by the bus.
            bus.publish(channel, message, wait=False)
            return True
        except CrossWSError as exc:
            logger.debug("publish on %s failed: %s", channel, exc)
            return False

    def _route(self, channel: str, message: Dict[str, Any]) -> None:
        """Publish a message for users; while no Redis node is healthy, hold it in the bounded
        outage buffer and send it, in order, once one is back."""
        self.outage.publish(channel, message)

    def _publish_cluster(self, message: Dict[str, Any]) -> None:
        if self._left:
            return
        message["node"] = self.name
        message["senderServer"] = self.name
        self._publish(self.cluster_channel, message)

    def _route_to_node(self, name: str, message: Dict[str, Any]) -> None:
        message["node"] = self.name
        message["senderServer"] = self.name
        self._route(self.node_channel_of(name), message)

    def _send_to_node(self, name: str, message: Dict[str, Any]) -> bool:
        message["node"] = self.name
        message["senderServer"] = self.name
        return self._publish(self.node_channel_of(name), message)

    # Sending (called by the adapter after local delivery) ----------------------------------

    def publish_broadcast(self, text: Union[str, bytes]) -> None:
        envelope = ws_broadcast(text, self.name) if isinstance(text, str) else self._with_bytes(ws_broadcast("", self.name), text)
        self._route(self.broadcast_channel, envelope)

    def _with_bytes(self, envelope: Dict[str, Any], data: bytes) -> Dict[str, Any]:
        """``envelope`` carrying ``data`` as the bus's codec allows (see :func:`envelope.raw_data`)."""
        envelope.update(raw_data(data, self._bus.codec.codec if self._bus is not None else "json"))
        return envelope

    def publish_unicast(self, socket_id: str, text: str) -> None:
        owners = self.directory.user_nodes(socket_id)
        owners.discard(self.name)
        if owners:
            self.stats["node_unicasts"] += 1
            targets = sorted(owners)
            for owner in targets:
                self._route_to_node(owner, {"t": "uni", "ids": [socket_id], "data": text, "to": targets})
        else:
            self.stats["shared_unicasts"] += 1
            self._route(self.private_channel, ws_unicast(text, socket_id, self.name))

    def publish_multicast(self, socket_ids: List[str], text: str) -> None:
        by_owner: Dict[str, List[str]] = {}
        unknown: List[str] = []
        for socket_id in socket_ids:
            owners = self.directory.user_nodes(socket_id)
            owners.discard(self.name)
            if not owners:
                unknown.append(socket_id)
            for owner in owners:
                by_owner.setdefault(owner, []).append(socket_id)
        targets = sorted(by_owner)
        for owner, ids in by_owner.items():
            self.stats["node_unicasts"] += 1
            self._route_to_node(owner, {"t": "uni", "ids": ids, "data": text, "to": targets})
        if unknown:
            self.stats["shared_unicasts"] += 1
            if len(unknown) == 1:
                self._route(self.private_channel, ws_unicast(text, unknown[0], self.name))
            else:
                self._route(self.private_channel, ws_multicast(text, unknown, self.name))

    def publish_room(self, namespace: str, room_id: str, text: Union[str, bytes], excluded: List[str],
                     destroy: bool) -> None:
        if isinstance(text, str):
            envelope = ws_room(text, namespace, room_id, self.name, excluded)
        else:
            envelope = self._with_bytes(ws_room("", namespace, room_id, self.name, excluded), text)
        if destroy:
            envelope["roomDestroy"] = True
        self._route(self.channel_for_namespace(namespace), envelope)

    # Subscriptions --------------------------------------------------------------------------

    def namespace_used(self, namespace: str) -> None:
        """Block until the namespace's channel is subscribed on every healthy Redis node."""
        if self._bus is not None and self.websocket:
            self._bus.subscribe(self.channel_for_namespace(namespace))

    def namespace_unused(self, namespace: str) -> None:
        self.namespaces_unused([namespace])

    def namespaces_unused(self, namespaces: List[str]) -> None:
        """Unsubscribe the channels of emptied namespaces (one UNSUBSCRIBE per Redis node)."""
        # Re-check: a join may have happened while we were getting here.
        if self._bus is not None:
            rooms = self.local.rooms
            channels = [self.channel_for_namespace(ns) for ns in namespaces if not rooms.has_namespace(ns)]
            if channels:
                self._bus.unsubscribe_many(channels)

    # Directory deltas from this node --------------------------------------------------------

    def user_mapped(self, socket_id: str) -> None:
        mapped_at = time.time()
        self._mapped_at[socket_id] = mapped_at
        self._queue(["u+", socket_id, mapped_at])

    def user_unmapped(self, socket_id: str) -> None:
        if self._mapped_at.pop(socket_id, None) is not None:
            self._queue(["u-", socket_id])

    def room_joined(self, namespace: str, room_id: str, socket_id: str) -> None:
        self._queue(["j", namespace, room_id, socket_id])

    def room_left(self, namespace: str, room_id: str, socket_id: str) -> None:
        self._queue(["l", namespace, room_id, socket_id])

    def _queue(self, op: List[Any]) -> None:
        self._ops.append(op)
        if len(self._ops) >= 500:
            self._flush()
        elif self._flusher is None:
            self._flusher = gevent.spawn_later(0.02, self._flush_later)

    def _flush_later(self) -> None:
        self._flusher = None
        self._flush()

    def _flush(self) -> None:
        if not self._ops or self._bus is None:
            return
        ops, self._ops = self._ops, []
        self._seq += 1
        self._publish_cluster({"t": "delta", "seq": self._seq, "ops": ops})

    def duplicate_owner(self, socket_id: str) -> Set[str]:
        """Other live nodes where ``socket_id`` is mapped."""
        owners = self.directory.user_nodes(socket_id)
        owners.discard(self.name)
        return owners

    def kick_elsewhere(self, socket_id: str, code: int) -> None:
        for owner in self.duplicate_owner(socket_id):
            self._send_to_node(owner, {"t": "kick", "id": socket_id, "code": code, "at": time.time()})

    # Receiving ------------------------------------------------------------------------------

    def on_ws_message(self, channel: str, envelope: Any) -> None:
        """Entry point for every message the bus received on a ``ws_prefix`` channel."""
        if channel != self.cluster_channel:
            self.stats["routing_messages_in"] += 1
        try:
            if channel == self.cluster_channel or channel == self.node_channel:
                kind = envelope.get("t") if type(envelope) is dict else None
                handler = self._handlers.get(kind) if type(kind) is str else None
                if handler is None or type(envelope.get("node")) is not str:
                    self.stats["bad_messages"] += 1
                    return
                handler(envelope)
            elif channel == self.private_channel:
                self._on_private(envelope)
            elif channel == self.broadcast_channel:
                self.local.deliver_to_all(frames.encode_data(data_of(envelope)))
            else:
                self._on_room(envelope)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.stats["bad_messages"] += 1
            logger.warning("bad routing message on %s: %s", channel, exc)

    def _on_private(self, envelope: Dict[str, Any]) -> None:
        skip = envelope.get("skip")
        if type(skip) is list and self.name in skip:
            return  # a forward of a message this node was already sent directly
        text = envelope["data"]
        if type(text) is not str:
            raise ValueError("data is not a string")
        ids = envelope.get("socketIds")
        if type(ids) is not list:
            ids = [envelope.get("socketId")]
        if not any(type(socket_id) is str for socket_id in ids):
            raise ValueError("no string socketId / socketIds")
        frame = frames.encode_text(text)
        for socket_id in ids:
            if type(socket_id) is str:
                self.local.deliver_to_socket(socket_id, frame)

    def _on_room(self, envelope: Dict[str, Any]) -> None:
        data, namespace, room_id = data_of(envelope), envelope["roomNamespace"], envelope["roomId"]
        if type(namespace) is not str or type(room_id) is not str:
            raise ValueError("malformed room envelope")
        excluded = envelope.get("excludeSocketIds") or ()
        self.local.deliver_to_room(namespace, room_id, frames.encode_data(data),
                                     set(x for x in excluded if type(x) is str))
        if envelope.get("roomDestroy") is True:
            self.local.remove_room(namespace, room_id)

    def _on_node_unicast(self, message: Dict[str, Any]) -> None:
        text = message["data"]
        frame = frames.encode_text(text)
        missing = [sid for sid in message["ids"] if type(sid) is str and not self.local.deliver_to_socket(sid, frame)]
        if missing and not message.get("fwd"):
            # The user moved (or is reconnecting) since the sender looked us up: fall back to the
            # shared channel, which every node reads. Never forwarded twice.
            self.stats["forwarded"] += 1
            envelope = ws_multicast(text, missing, self.name) if len(missing) > 1 else ws_unicast(text, missing[0], self.name)
            envelope["fwd"] = 1
            # Nodes the sender already targeted must not deliver it a second time.
            targets = message.get("to")
            envelope["skip"] = sorted(set(targets if type(targets) is list else ()) | {self.name})
            self._route(self.private_channel, envelope)

    def _on_heartbeat(self, message: Dict[str, Any]) -> None:
        name = message["node"]
        if name == self.name:
            return
        meta = {"websocket": bool(message.get("ws", True))}
        now = time.time()
        if self.directory.heartbeat(name, int(message.get("seq", 0)), now, meta) and not self.assembler.assembling(name, now):
            self._send_to_node(name, {"t": "sync"})

    def _on_hello(self, message: Dict[str, Any]) -> None:
        name = message["node"]
        if name == self.name:
            return
        self.directory.touch(name, time.time())
        self._send_snapshot(name)

    def _on_bye(self, message: Dict[str, Any]) -> None:
        self.assembler.forget(message["node"])
        if message["node"] != self.name and self.directory.remove(message["node"]):
            logger.info("node %s left the cluster (goodbye)", message["node"])

    def _on_sync_request(self, message: Dict[str, Any]) -> None:
        self._send_snapshot(message["node"])

    def _send_snapshot(self, name: str) -> None:
        """Send this node's users and rooms to ``name``, in parts, from a greenlet of its own:
        a big snapshot never holds up the listener, and one per peer is in flight at a time."""
        if self._left or self._stopped or name in self._snapshots_sending:
            return
        self._flush()
        registry = self.local.rooms
        rooms = [(ns, room_id, list(registry.members(ns, room_id)))
                 for ns in registry.namespaces() for room_id in registry.room_ids(ns)]
        parts = list(snapshot_parts(dict(self._mapped_at), rooms))
        self._snapshots_sending.add(name)
        self.stats["snapshots_sent"] += 1
        gevent.spawn(self._send_snapshot_parts, name, self._seq, parts)

    def _send_snapshot_parts(self, name: str, seq: int, parts: List[Any]) -> None:
        try:
            for index, (users, rooms) in enumerate(parts):
                message = {"t": "snap", "seq": seq, "users": users, "rooms": rooms, "ws": self.websocket}
                if len(parts) > 1:
                    message.update(part=index, parts=len(parts))
                if not self._send_to_node(name, message):
                    return
                gevent.sleep(0)  # let the node serve its clients between parts
        finally:
            self._snapshots_sending.discard(name)

    def _on_snapshot(self, message: Dict[str, Any]) -> None:
        name = message["node"]
        if name == self.name:
            return
        now = time.time()
        users, rooms, seq = dict(message["users"]), dict(message["rooms"]), int(message["seq"])
        deltas: List[Any] = []
        if "parts" in message:
            done = self.assembler.add_part(name, seq, int(message["part"]), int(message["parts"]), users, rooms, now)
            self.directory.touch(name, now)
            if done is None:
                return
            seq, users, rooms, deltas = done
        self.stats["snapshots_received"] += 1
        self.directory.apply_snapshot(name, seq, users, rooms, now)
        self.directory.touch(name, now, {"websocket": bool(message.get("ws", True))})
        for user, mapped_at in users.items():
            self._check_duplicate(user, float(mapped_at))
        for delta_seq, ops in deltas:  # what changed while the parts were on their way
            if delta_seq > seq and not self._apply_delta(name, delta_seq, ops, now):
                break

    def _on_delta(self, message: Dict[str, Any]) -> None:
        name = message["node"]
        if name == self.name:
            return
        now = time.time()
        if self.assembler.assembling(name, now):
            self.assembler.buffer_delta(name, int(message["seq"]), message["ops"])
            return
        self._apply_delta(name, int(message["seq"]), message["ops"], now)

    def _apply_delta(self, name: str, seq: int, ops: Any, now: float) -> bool:
        ok, mapped = self.directory.apply_delta(name, seq, ops, now)
        if not ok:
            self._send_to_node(name, {"t": "sync"})
            return False
        for user, mapped_at in mapped:
            self._check_duplicate(user, mapped_at)
        return True

    def _check_duplicate(self, user: str, remote_mapped_at: float) -> None:
        """Same user mapped here and on another node: apply the duplicate-login policy."""
        policy = self.settings.duplicate_login
        local_at = self._mapped_at.get(user)
        if policy is None or local_at is None:
            return
        conn = self.local.get_socket_instance(user)
        if conn is None or not conn.open:
            return
        local_is_older = local_at < remote_mapped_at
        code = self.settings.duplicate_login_code
        if policy == "close_old" and local_is_older:
            conn.close(code, "logged in elsewhere")
        elif policy == "reject_new" and not local_is_older:
            conn.close(code, "duplicate login")

    def _on_kick(self, message: Dict[str, Any]) -> None:
        user = message["id"]
        conn = self.local.get_socket_instance(user)
        if conn is not None and conn.open and self._mapped_at.get(user, 0) <= float(message.get("at", 0)):
            conn.close(int(message.get("code", 4012)), "logged in elsewhere")

    # Queries --------------------------------------------------------------------------------

    def live_nodes(self) -> List[Dict[str, Any]]:
        """This node and every remote node heard from within the expiry time."""
        now = time.time()
        self.directory.expire(now, self.expiry)
        me = {"server_name": self.name, "users": len(self._mapped_at), "rooms": len(self.local.rooms),
              "last_seen_ago": 0.0, "synced": True, "websocket": self.websocket, "self": True}
        return [me] + [entry.as_dict(now) for entry in self.directory.nodes.values()]

    def find_user_node(self, socket_id: str) -> Optional[str]:
        if socket_id in self._mapped_at:
            return self.name
        owners = self.directory.user_nodes(socket_id)
        return sorted(owners)[0] if owners else None

    def cluster_stats(self) -> Dict[str, Any]:
        nodes = {node["server_name"]: node["users"] for node in self.live_nodes()}
        users = self.directory.users() | set(self._mapped_at)
        return {"online_users": len(users), "nodes": nodes, "node_count": len(nodes)}

    def room_members(self, namespace: str, room_id: str) -> Set[str]:
        return self.directory.room_members(namespace, room_id) | set(self.local.rooms.members(namespace, room_id))

    def room_ids(self, namespace: str) -> Set[str]:
        return self.directory.room_ids(namespace) | set(self.local.rooms.room_ids(namespace))

