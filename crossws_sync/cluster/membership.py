"""The cluster registry of one node: who is in the cluster, which users and rooms each node has.

Every node publishes on the cluster channel (``ws:_crossws.cluster``): a ``hello`` when it starts,
a heartbeat every ``heartbeat_interval`` seconds, deltas of its users and rooms (batched), and a
``bye`` when it shuts down; a peer that hears a new node (or misses deltas) asks for a snapshot,
sent in parts on that node's own channel. The directory (:mod:`crossws_sync.core.directory`)
holds what was heard; a node silent for three heartbeats is dropped. After a node's ``bye``, what
it still has on its way (a heartbeat, a delta, a snapshot part written before the goodbye on
another path) is ignored until it says ``hello`` again or the expiry time has passed. Duplicate logins across
nodes are detected here and settled by the ``duplicate_login`` policy.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional, Set

import gevent

from ..core.directory import ClusterDirectory, SnapshotAssembler, snapshot_parts
from ..io.supervisor import supervise
from .contracts import LocalDelivery, RouterSettings

logger = logging.getLogger("crossws_sync.cluster")

PROTOCOL_VERSION = 1


class Membership:
    """This node's view of the cluster and its own announcements.

    Args:
        local: this node's users and rooms.
        settings: the node's name and options.
        cluster_channel: the channel every node announces on.
        publish: ``publish(channel, message) -> bool``, pipelined, never buffered.
        node_channel_of: a node's own channel, by name.
        stats: the router's counters (``snapshots_sent``, ``snapshots_received``).
    """

    def __init__(self, local: LocalDelivery, settings: RouterSettings, *, cluster_channel: str, publish: Callable[[str, Dict[str, Any]], bool],
                 node_channel_of: Callable[[str], str], stats: Dict[str, int]) -> None:
        self.local = local
        self.settings = settings
        self.name = settings.server_name
        self.websocket = settings.websocket
        self.cluster_channel = cluster_channel
        self._publish = publish
        self._node_channel_of = node_channel_of
        self.stats = stats
        self.directory = ClusterDirectory()
        #: snapshots come in parts (each far under the bus cap); deltas wait while one is assembled
        self.assembler = SnapshotAssembler()
        self._snapshots_sending: Set[str] = set()
        self.interval = settings.heartbeat_interval
        self.expiry = self.interval * 3 + 0.5
        self._seq = 0
        self._ops: List[List[Any]] = []
        self._mapped_at: Dict[str, float] = {}
        #: nodes that said goodbye -> when: their late messages must not register them again
        self._departed: Dict[str, float] = {}
        self._flusher: Optional[gevent.Greenlet] = None
        self._heart: Optional[gevent.Greenlet] = None
        self._started = False
        self._stopped = False
        self._left = False
        self.handlers: Dict[str, Callable[[Dict[str, Any]], None]] = {
            "hb": self._on_heartbeat, "delta": self._on_delta, "hello": self._on_hello, "bye": self._on_bye,
            "sync": self._on_sync_request, "snap": self._on_snapshot, "kick": self._on_kick,
        }

    def start(self) -> None:
        """Say hello, send a first heartbeat and keep beating (the bus is up)."""
        self._started = True
        now = time.time()
        for socket_id in self.local.get_local_socket_ids():  # mapped before the bus started
            self._mapped_at.setdefault(socket_id, now)
        self._publish_cluster({"t": "hello", "v": PROTOCOL_VERSION})
        self._publish_cluster(self._heartbeat_message())
        self._heart = gevent.spawn(supervise, self._heartbeat_loop, "cluster heartbeat", logger,
                                   stopped=lambda: self._stopped)

    @property
    def registered(self) -> bool:
        """Whether this node announced itself (hello and first heartbeat) and has not left."""
        return self._started and not self._stopped and not self._left

    def leave(self, say_goodbye: Callable[[Dict[str, Any]], None]) -> None:
        """Flush what is queued, then ``say_goodbye(bye)`` once; nothing is announced after it
        (a heartbeat, delta or snapshot sent later would register the node again on every peer)."""
        if self._started and not self._stopped and not self._left:
            self.flush()
            # Marked before the goodbye, which waits for Redis: a heartbeat due meanwhile would
            # otherwise be written after it and register the node again.
            self._left = True
            say_goodbye({"t": "bye", "node": self.name, "senderServer": self.name})

    def stop(self, *, silently: bool = False) -> None:
        """Stop the heartbeat and the delta flusher (``silently``: announce nothing more)."""
        if silently:
            self._left = True
        self._stopped = True
        for greenlet in (self._heart, self._flusher):
            if greenlet is not None:
                greenlet.kill(block=False)

    def _send_to_node(self, name: str, message: Dict[str, Any]) -> bool:
        if self._left:
            return False
        message["node"] = self.name
        message["senderServer"] = self.name
        return self._publish(self._node_channel_of(name), message)

    def _heartbeat_loop(self) -> None:
        while not self._stopped:
            gevent.sleep(self.interval)
            self._publish_cluster(self._heartbeat_message())
            now = time.time()
            for name, at in list(self._departed.items()):
                if now - at > self.expiry:
                    del self._departed[name]
            for name in self.directory.expire(now, self.expiry):
                self.assembler.forget(name)
                logger.info("node %s left the cluster (no heartbeat for %.1fs)", name, self.expiry)

    def _heartbeat_message(self) -> Dict[str, Any]:
        return {"t": "hb", "seq": self._seq, "ws": self.websocket, "users": len(self._mapped_at)}

    def _publish_cluster(self, message: Dict[str, Any]) -> None:
        if self._left:
            return
        message["node"] = self.name
        message["senderServer"] = self.name
        self._publish(self.cluster_channel, message)

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
            self.flush()
        elif self._flusher is None:
            self._flusher = gevent.spawn_later(0.02, self._flush_later)

    def _flush_later(self) -> None:
        self._flusher = None
        self.flush()

    def flush(self) -> None:
        if not self._ops or not self._started:
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

    def _ignored(self, name: str, now: float) -> bool:
        """Whether a message from ``name`` must not touch the directory: ours, or late from a
        node that said goodbye (within the expiry time; its ``hello`` ends that)."""
        if name == self.name:
            return True
        at = self._departed.get(name)
        return at is not None and now - at <= self.expiry

    def _on_heartbeat(self, message: Dict[str, Any]) -> None:
        name = message["node"]
        now = time.time()
        if self._ignored(name, now):
            return
        meta = {"websocket": bool(message.get("ws", True))}
        if self.directory.heartbeat(name, int(message.get("seq", 0)), now, meta) and not self.assembler.assembling(name, now):
            self._send_to_node(name, {"t": "sync"})

    def _on_hello(self, message: Dict[str, Any]) -> None:
        name = message["node"]
        if name == self.name:
            return
        self._departed.pop(name, None)  # back (a restart under the same name)
        self.directory.touch(name, time.time())
        self._send_snapshot(name)

    def _on_bye(self, message: Dict[str, Any]) -> None:
        self.assembler.forget(message["node"])
        if message["node"] == self.name:
            return
        self._departed[message["node"]] = time.time()
        if self.directory.remove(message["node"]):
            logger.info("node %s left the cluster (goodbye)", message["node"])

    def _on_sync_request(self, message: Dict[str, Any]) -> None:
        self._send_snapshot(message["node"])

    def _send_snapshot(self, name: str) -> None:
        """Send this node's users and rooms to ``name``, in parts, from a greenlet of its own:
        a big snapshot never holds up the listener, and one per peer is in flight at a time."""
        if self._left or self._stopped or name in self._snapshots_sending:
            return
        self.flush()
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
        now = time.time()
        if self._ignored(name, now):
            return
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
        now = time.time()
        if self._ignored(name, now):
            return
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


__all__ = ["Membership", "PROTOCOL_VERSION"]
