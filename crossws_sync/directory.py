"""Cluster directory: which nodes are alive, which users and room members each holds. Pure.

Every node keeps a replica, fed by messages on the cluster channel (see
:mod:`crossws_sync.distributed`): a *snapshot* of a node's users and rooms, then numbered
*deltas* (``seq`` increases by one per delta), and periodic *heartbeats* carrying the last
``seq``. A delta or heartbeat that reveals a gap makes the caller ask that node for a fresh
snapshot. Nodes whose heartbeat stops are expired; a node that says goodbye is removed at once.

Queries are answered from memory: no Redis call per user or per room member.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

#: Delta operations: ("u+", user, mapped_at) / ("u-", user) / ("j", ns, room, user) / ("l", ns, room, user)
Op = Sequence[Any]


class NodeEntry:
    """What the directory knows of one node."""

    __slots__ = ("name", "seq", "last_seen", "users", "rooms", "meta", "synced")

    def __init__(self, name: str, now: float) -> None:
        self.name = name
        self.seq = -1
        self.last_seen = now
        self.users: Dict[str, float] = {}  # user -> mapped_at (epoch seconds)
        self.rooms: Dict[str, Dict[str, Set[str]]] = {}
        self.meta: Dict[str, Any] = {}
        self.synced = False

    def as_dict(self, now: float) -> Dict[str, Any]:
        return {
            "server_name": self.name,
            "users": len(self.users),
            "rooms": sum(len(r) for r in self.rooms.values()),
            "last_seen_ago": max(0.0, now - self.last_seen),
            "synced": self.synced,
            **self.meta,
        }


class ClusterDirectory:
    """Replica of the cluster's users and rooms, one entry per remote node."""

    def __init__(self) -> None:
        self.nodes: Dict[str, NodeEntry] = {}
        self._user_nodes: Dict[str, Set[str]] = {}

    # Feeding -------------------------------------------------------------------------------

    def touch(self, name: str, now: float, meta: Optional[Dict[str, Any]] = None) -> NodeEntry:
        """Record that ``name`` is alive (creating its entry)."""
        entry = self.nodes.get(name)
        if entry is None:
            entry = self.nodes[name] = NodeEntry(name, now)
        entry.last_seen = now
        if meta:
            entry.meta.update(meta)
        return entry

    def heartbeat(self, name: str, seq: int, now: float, meta: Optional[Dict[str, Any]] = None) -> bool:
        """Apply a heartbeat; return True when a snapshot must be requested (unknown or gap)."""
        entry = self.touch(name, now, meta)
        return not entry.synced or seq != entry.seq

    def apply_snapshot(self, name: str, seq: int, users: Dict[str, float], rooms: Dict[str, Dict[str, Iterable[str]]],
                       now: float) -> None:
        """Replace everything known of ``name``."""
        entry = self.touch(name, now)
        for user in list(entry.users):
            self._unindex_user(user, name)
        entry.users = {}
        entry.rooms = {}
        for user, mapped_at in users.items():
            entry.users[user] = float(mapped_at)
            self._user_nodes.setdefault(user, set()).add(name)
        for namespace, room_map in rooms.items():
            entry.rooms[namespace] = {room: set(members) for room, members in room_map.items() if members}
        entry.seq = seq
        entry.synced = True

    def apply_delta(self, name: str, seq: int, ops: Iterable[Op], now: float) -> Tuple[bool, List[Tuple[str, float]]]:
        """Apply numbered operations.

        Returns:
            ``(ok, mapped)``: ``ok`` False when the delta does not follow the last one (the
            caller asks for a snapshot; nothing is applied); ``mapped`` lists ``(user,
            mapped_at)`` of users that this delta maps on ``name`` (for duplicate-login checks).
        """
        entry = self.touch(name, now)
        if not entry.synced or seq != entry.seq + 1:
            return False, []
        mapped: List[Tuple[str, float]] = []
        for op in ops:
            kind = op[0]
            if kind == "u+":
                entry.users[op[1]] = float(op[2])
                self._user_nodes.setdefault(op[1], set()).add(name)
                mapped.append((op[1], float(op[2])))
            elif kind == "u-":
                if entry.users.pop(op[1], None) is not None:
                    self._unindex_user(op[1], name)
            elif kind == "j":
                entry.rooms.setdefault(op[1], {}).setdefault(op[2], set()).add(op[3])
            elif kind == "l":
                rooms = entry.rooms.get(op[1])
                if rooms is not None:
                    members = rooms.get(op[2])
                    if members is not None:
                        members.discard(op[3])
                        if not members:
                            del rooms[op[2]]
                    if not rooms:
                        del entry.rooms[op[1]]
        entry.seq = seq
        return True, mapped

    def remove(self, name: str) -> bool:
        """Forget a node (goodbye or expiry). Returns whether it was known."""
        entry = self.nodes.pop(name, None)
        if entry is None:
            return False
        for user in entry.users:
            self._unindex_user(user, name)
        return True

    def expire(self, now: float, timeout: float) -> List[str]:
        """Remove nodes not heard from for ``timeout`` seconds; return their names."""
        dead = [name for name, entry in self.nodes.items() if now - entry.last_seen > timeout]
        for name in dead:
            self.remove(name)
        return dead

    def _unindex_user(self, user: str, name: str) -> None:
        nodes = self._user_nodes.get(user)
        if nodes is not None:
            nodes.discard(name)
            if not nodes:
                del self._user_nodes[user]

    # Queries -------------------------------------------------------------------------------

    def user_nodes(self, user: str) -> Set[str]:
        """Remote nodes where ``user`` is mapped (a copy)."""
        return set(self._user_nodes.get(user, ()))

    def users(self) -> Set[str]:
        """Every user mapped on a remote node."""
        return set(self._user_nodes)

    def room_members(self, namespace: str, room_id: str) -> Set[str]:
        """Members of a room on remote nodes."""
        members: Set[str] = set()
        for entry in self.nodes.values():
            members |= entry.rooms.get(namespace, {}).get(room_id, set())
        return members

    def room_ids(self, namespace: str) -> Set[str]:
        """Ids of the non-empty rooms of a namespace on remote nodes."""
        ids: Set[str] = set()
        for entry in self.nodes.values():
            ids.update(entry.rooms.get(namespace, {}))
        return ids
