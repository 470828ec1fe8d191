"""Cluster directory: which nodes are alive, which users and room members each holds. Pure.

Every node keeps a replica, fed by messages on the cluster channel (see
:mod:`crossws_sync.cluster.routing`): a *snapshot* of a node's users and rooms, then numbered
*deltas* (``seq`` increases by one per delta), and periodic *heartbeats* carrying the last
``seq``. A delta or heartbeat that reveals a gap makes the caller ask that node for a fresh
snapshot. Nodes whose heartbeat stops are expired; a node that says goodbye is removed at once.

Queries are answered from memory: no Redis call per user or per room member.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

#: Delta operations: ("u+", user, mapped_at) / ("u-", user) / ("j", ns, room, user) / ("l", ns, room, user)
Op = Sequence[Any]


#: Target size of one snapshot part (estimated JSON bytes): far under the bus's 16 MiB message cap.
SNAPSHOT_PART_BYTES = 256 * 1024

Rooms = Dict[str, Dict[str, List[str]]]


def snapshot_parts(users: Dict[str, float], rooms: Iterable[Tuple[str, str, Iterable[str]]],
                   part_bytes: int = SNAPSHOT_PART_BYTES) -> Iterator[Tuple[Dict[str, float], Rooms]]:
    """Cut a node's users and rooms into parts of about ``part_bytes`` (estimated JSON size).

    Args:
        users: ``{user: mapped_at}``.
        rooms: ``(namespace, room_id, members)`` triples.
    Yields:
        ``(users, rooms)`` parts; at least one (empty) part. A room whose members alone pass
        the target is split across parts (the receiver merges them).
    """
    part_users: Dict[str, float] = {}
    part_rooms: Rooms = {}
    size = 0
    for user, mapped_at in users.items():
        part_users[user] = mapped_at
        size += len(user) + 24
        if size >= part_bytes:
            yield part_users, part_rooms
            part_users, part_rooms, size = {}, {}, 0
    for namespace, room_id, members in rooms:
        overhead = len(namespace) + len(room_id) + 12
        current: List[str] = part_rooms.setdefault(namespace, {}).setdefault(room_id, [])
        size += overhead
        for member in members:
            current.append(member)
            size += len(member) + 4
            if size >= part_bytes:
                yield part_users, part_rooms
                part_users, part_rooms, size = {}, {}, overhead
                current = part_rooms.setdefault(namespace, {}).setdefault(room_id, [])
    yield part_users, part_rooms


class _Assembly:
    __slots__ = ("seq", "count", "received", "users", "rooms", "deltas", "started")

    def __init__(self, seq: int, count: int, now: float) -> None:
        self.seq = seq
        self.count = count
        self.received: Set[int] = set()
        self.users: Dict[str, float] = {}
        self.rooms: Dict[str, Dict[str, Set[str]]] = {}
        self.deltas: List[Tuple[int, Sequence[Op]]] = []
        self.started = now


class SnapshotAssembler:
    """Collects the parts of each node's snapshot, and the deltas that arrive meanwhile.

    Args:
        timeout: an assembly not completed within this many seconds is dropped.
        max_deltas: deltas buffered per assembly; past it the assembly is dropped (and the
            caller asks again later).
    """

    def __init__(self, timeout: float = 30.0, max_deltas: int = 10000) -> None:
        self.timeout = timeout
        self.max_deltas = max_deltas
        self._assemblies: Dict[str, _Assembly] = {}

    def assembling(self, name: str, now: float) -> bool:
        """Whether parts of ``name``'s snapshot are still expected (a recent assembly is open)."""
        assembly = self._assemblies.get(name)
        if assembly is not None and now - assembly.started > self.timeout:
            del self._assemblies[name]
            return False
        return assembly is not None

    def add_part(self, name: str, seq: int, index: int, count: int, users: Dict[str, Any],
                 rooms: Dict[str, Dict[str, Iterable[str]]], now: float
                 ) -> Optional[Tuple[int, Dict[str, float], Dict[str, Dict[str, Set[str]]], List[Tuple[int, Sequence[Op]]]]]:
        """Add one part; return ``(seq, users, rooms, deltas)`` once every part arrived.

        A part of a newer snapshot (another ``seq`` or ``count``) replaces an older assembly.
        ``deltas`` are those buffered with :meth:`buffer_delta`, sorted by ``seq``.
        """
        if count < 1 or not 0 <= index < count:
            raise ValueError("bad snapshot part %r of %r" % (index, count))
        assembly = self._assemblies.get(name)
        if assembly is None or assembly.seq != seq or assembly.count != count:
            deltas = assembly.deltas if assembly is not None else []
            assembly = self._assemblies[name] = _Assembly(seq, count, now)
            assembly.deltas = deltas
        if index in assembly.received:
            return None
        assembly.received.add(index)
        for user, mapped_at in users.items():
            assembly.users[user] = float(mapped_at)
        for namespace, room_map in rooms.items():
            target = assembly.rooms.setdefault(namespace, {})
            for room_id, members in room_map.items():
                target.setdefault(room_id, set()).update(members)
        if len(assembly.received) < count:
            return None
        del self._assemblies[name]
        deltas = sorted(assembly.deltas, key=lambda item: item[0])
        return assembly.seq, assembly.users, assembly.rooms, deltas

    def buffer_delta(self, name: str, seq: int, ops: Sequence[Op]) -> bool:
        """Keep a delta of a node whose snapshot is being assembled; False if none is."""
        assembly = self._assemblies.get(name)
        if assembly is None:
            return False
        if len(assembly.deltas) >= self.max_deltas:
            del self._assemblies[name]
            return False
        assembly.deltas.append((seq, ops))
        return True

    def forget(self, name: str) -> None:
        """Drop ``name``'s assembly (the node left)."""
        self._assemblies.pop(name, None)


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
