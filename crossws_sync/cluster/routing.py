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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union


from ..wire import frames
from ..wire.positions import POSITION_FIELD
from ..wire.envelope import data_of, raw_data, broadcast_channel, private_socket_channel, ws_broadcast, ws_multicast, ws_room, ws_unicast
from ..errors import CrossWSError
from ..core.names import RESERVED_NAMESPACE_PREFIX
from .contracts import LocalDelivery, RouterSettings
from .membership import Membership
from .outage import OutageBuffer

if TYPE_CHECKING:
    from ..bus.bus import CrossServerBus
    from .recovery import Recovery

logger = logging.getLogger("crossws_sync.cluster")




class Router:
    """Routes the node's sends to users and rooms on any node; its :attr:`membership` keeps the
    cluster registry (who is where).

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
        self._bus: Optional["CrossServerBus"] = None
        #: connection state recovery, when on: positioned sends and exact delivery
        self.recovery: Optional["Recovery"] = None
        self._stopped = False
        self.stats = {"node_unicasts": 0, "shared_unicasts": 0, "forwarded": 0, "snapshots_sent": 0,
                      "snapshots_received": 0, "bad_messages": 0, "routing_messages_in": 0,
                      "outage_buffered": 0, "outage_flushed": 0, "outage_dropped": 0}
        #: messages for users held while no Redis node is healthy (see outage.py)
        self.outage = OutageBuffer(size=settings.outage_buffer_size, age=settings.outage_buffer_age, stats=self.stats,
                                   bus=lambda: self._bus, stopped=lambda: self._stopped)
        #: the cluster registry: heartbeats, users and rooms of every node, duplicate logins
        self.membership = Membership(local, settings, cluster_channel=self.cluster_channel, publish=self._publish,
                                     node_channel_of=self.node_channel_of, stats=self.stats)
        self._handlers: Dict[str, Callable[[Dict[str, Any]], None]] = dict(self.membership.handlers,
                                                                           uni=self._on_node_unicast)

    def channel_for_namespace(self, namespace: str) -> str:
        """The Redis channel of a room namespace (``ws:`` + namespace, as the original)."""
        return self.settings.ws_prefix + namespace

    def node_channel_of(self, name: str) -> str:
        return self.settings.ws_prefix + RESERVED_NAMESPACE_PREFIX + ".node:" + name

    def add_handlers(self, handlers: Dict[str, Callable[[Dict[str, Any]], None]]) -> None:
        """Dispatch more message kinds (``"t"``) of the node and cluster channels (the handlers of
        other parts of the node, such as :mod:`.asks`). A kind already handled is refused.

        Raises:
            ValueError: a kind that is already handled.
        """
        taken = set(handlers) & set(self._handlers)
        if taken:
            raise ValueError("message kinds already handled: %s" % ", ".join(sorted(taken)))
        self._handlers.update(handlers)

    def send_to_node(self, name: str, message: Dict[str, Any]) -> bool:
        """Publish ``message`` on node ``name``'s own channel, pipelined and not buffered during an
        outage; returns False when no Redis node could take it."""
        message["node"] = self.name
        message["senderServer"] = self.name
        return self._publish(self.node_channel_of(name), message)

    # Lifecycle -----------------------------------------------------------------------------

    def initial_channels(self) -> List[str]:
        """Channels to subscribe from the start (before any traffic is relied upon)."""
        channels = [self.cluster_channel, self.node_channel]
        if self.websocket:
            channels += [self.private_channel, self.broadcast_channel]
            channels += [self.channel_for_namespace(ns) for ns in self.settings.preset_namespaces]
        return channels

    def start(self, bus: "CrossServerBus") -> None:
        """Route through ``bus`` and join the cluster."""
        self._bus = bus
        # Already in initial_channels(); subscribe() here waits for the confirmation, so peers'
        # snapshots answering our hello cannot arrive before we listen.
        for channel in (self.node_channel, self.cluster_channel):
            try:
                bus.subscribe(channel)
            except CrossWSError as exc:  # Redis down at start: the bus resubscribes when it is back
                logger.warning("could not subscribe %s yet: %s", channel, exc)
        self.membership.start()

    def leave_cluster(self) -> None:
        """Say goodbye so peers drop this node at once (graceful shutdown).

        The goodbye is the last message on the cluster channel: a heartbeat, delta or snapshot
        sent later (clients closing during the shutdown unmap users) would register the node
        again on every peer until it expired.
        """
        bus = self._bus
        if bus is None or self._stopped:
            return

        def say_goodbye(bye: Dict[str, Any]) -> None:
            try:  # waits for Redis: the bus is closed right after, and drops what is still queued
                bus.publish(self.cluster_channel, bye)
            except CrossWSError as exc:
                logger.warning("goodbye on %s failed: %s", self.cluster_channel, exc)

        self.membership.leave(say_goodbye)

    def abandon(self) -> None:
        """In a forked child: stop the inherited loops, say nothing to the cluster."""
        self.membership.stop(silently=True)
        self.stop()

    def stop(self) -> None:
        """Stop every loop (heartbeat, delta flusher, outage drain)."""
        self._stopped = True
        self.membership.stop()
        self.outage.stop()

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

    def _route_to_node(self, name: str, message: Dict[str, Any]) -> None:
        message["node"] = self.name
        message["senderServer"] = self.name
        self._route(self.node_channel_of(name), message)

    # Sending (called by the adapter after local delivery) ----------------------------------

    def publish_broadcast(self, text: Union[str, bytes]) -> None:
        if self.recovery is not None and isinstance(text, str):
            self.recovery.publish(self.broadcast_channel, ws_broadcast(text, self.name))
            return
        envelope = ws_broadcast(text, self.name) if isinstance(text, str) else self._with_bytes(ws_broadcast("", self.name), text)
        self._route(self.broadcast_channel, envelope)

    def _with_bytes(self, envelope: Dict[str, Any], data: bytes) -> Dict[str, Any]:
        """``envelope`` carrying ``data`` as the bus's codec allows (see :func:`envelope.raw_data`)."""
        envelope.update(raw_data(data, self._bus.codec.codec if self._bus is not None else "json"))
        return envelope

    def publish_unicast(self, socket_id: str, text: str) -> None:
        if self.recovery is not None:
            self._publish_positioned_unicast(socket_id, text)
            return
        owners = self.membership.directory.user_nodes(socket_id)
        owners.discard(self.name)
        if owners:
            self.stats["node_unicasts"] += 1
            targets = sorted(owners)
            for owner in targets:
                self._route_to_node(owner, {"t": "uni", "ids": [socket_id], "data": text, "to": targets})
        else:
            self.stats["shared_unicasts"] += 1
            self._route(self.private_channel, ws_unicast(text, socket_id, self.name))

    def _publish_positioned_unicast(self, socket_id: str, text: str) -> None:
        """With recovery: one append to the user's stream, published where the user is (this
        node included: local users get it back with its position), or on the shared channel."""
        assert self.recovery is not None
        owners = self.membership.directory.user_nodes(socket_id)
        owners.discard(self.name)
        conn = self.local.get_socket_instance(socket_id)
        if conn is not None and getattr(conn, "open", False):
            owners.add(self.name)
        if len(owners) == 1:
            owner = owners.pop()
            self.stats["node_unicasts"] += 1
            message = {"t": "uni", "ids": [socket_id], "data": text, "to": [owner], "node": self.name,
                       "senderServer": self.name}
            self.recovery.publish(self.node_channel_of(owner), message)
        else:
            self.stats["shared_unicasts"] += 1
            self.recovery.publish(self.private_channel, ws_unicast(text, socket_id, self.name))

    def publish_multicast(self, socket_ids: List[str], text: str) -> None:
        if self.recovery is not None:
            for socket_id in socket_ids:
                self._publish_positioned_unicast(socket_id, text)
            return
        by_owner: Dict[str, List[str]] = {}
        unknown: List[str] = []
        for socket_id in socket_ids:
            owners = self.membership.directory.user_nodes(socket_id)
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
        if self.recovery is not None and isinstance(text, str):
            self.recovery.publish(self.channel_for_namespace(namespace), envelope)
            return
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
                if self.recovery is not None and POSITION_FIELD in envelope:
                    self.recovery.deliver_all(envelope)
                else:
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
        if self.recovery is not None and POSITION_FIELD in envelope:
            for socket_id in ids:
                if type(socket_id) is str:
                    self.recovery.deliver_user(socket_id, envelope)
            return
        frame = frames.encode_text(text)
        for socket_id in ids:
            if type(socket_id) is str:
                self.local.deliver_to_socket(socket_id, frame)

    def _on_room(self, envelope: Dict[str, Any]) -> None:
        data, namespace, room_id = data_of(envelope), envelope["roomNamespace"], envelope["roomId"]
        if type(namespace) is not str or type(room_id) is not str:
            raise ValueError("malformed room envelope")
        if self.recovery is not None and POSITION_FIELD in envelope:
            self.recovery.deliver_room(namespace, room_id, envelope)
            return
        excluded = envelope.get("excludeSocketIds") or ()
        self.local.deliver_to_room(namespace, room_id, frames.encode_data(data),
                                     set(x for x in excluded if type(x) is str))
        if envelope.get("roomDestroy") is True:
            self.local.remove_room(namespace, room_id)

    def _on_node_unicast(self, message: Dict[str, Any]) -> None:
        text = message["data"]
        if type(text) is not str or type(message.get("ids")) is not list:
            raise ValueError("malformed node unicast")
        if self.recovery is not None and POSITION_FIELD in message:
            recovery = self.recovery
            missing = [sid for sid in message["ids"] if type(sid) is str and not recovery.deliver_user(sid, message)]
        else:
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
            if POSITION_FIELD in message:  # already in the history: forwarded with its position
                envelope = dict({POSITION_FIELD: message[POSITION_FIELD]}, **envelope)
            self._route(self.private_channel, envelope)

    # Queries --------------------------------------------------------------------------------
