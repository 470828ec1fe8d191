"""Room registry: namespaces -> rooms -> socket ids, and the reverse index. Pure.

Two indexes kept in step: ``rooms[ns][room_id] = {socket_id}`` and
``socket_rooms[socket_id][ns] = {room_id}``. Empty rooms, namespaces and socket entries are
always deleted, so nothing leaks. Mutations report whether a namespace went from empty to
used (``join``) or from used to empty (``leave`` / ``remove_room`` / ``remove_socket``) so the
caller can subscribe or unsubscribe the namespace's Redis channel. Queries return copies.
"""
from __future__ import annotations

from typing import AbstractSet, Dict, Iterable, List, Mapping, Optional, Set


class RoomRegistry:
    """Local room membership. Queries return fresh containers, except :meth:`members`, which
    returns the live set for the delivery hot path (callers must not mutate it)."""

    def __init__(self) -> None:
        self._rooms: Dict[str, Dict[str, Set[str]]] = {}
        self._socket_rooms: Dict[str, Dict[str, Set[str]]] = {}
        self._room_counts: Dict[str, int] = {}

    # Mutations ---------------------------------------------------------------------------

    def join(self, namespace: str, room_id: str, socket_id: str) -> bool:
        """Add ``socket_id`` to the room; return True if ``namespace`` was empty before."""
        rooms = self._rooms.get(namespace)
        new_namespace = rooms is None
        if rooms is None:
            rooms = self._rooms[namespace] = {}
        rooms.setdefault(room_id, set()).add(socket_id)
        joined = self._socket_rooms.setdefault(socket_id, {}).setdefault(namespace, set())
        if room_id not in joined:
            joined.add(room_id)
            self._room_counts[socket_id] = self._room_counts.get(socket_id, 0) + 1
        return new_namespace

    def leave(self, namespace: str, room_id: str, socket_id: str) -> bool:
        """Remove ``socket_id`` from the room; return True if ``namespace`` became empty."""
        self._unindex_socket(socket_id, namespace, room_id)
        rooms = self._rooms.get(namespace)
        if rooms is None:
            return False
        members = rooms.get(room_id)
        if members is None:
            return False
        members.discard(socket_id)
        if not members:
            del rooms[room_id]
        if not rooms:
            del self._rooms[namespace]
            return True
        return False

    def remove_room(self, namespace: str, room_id: str) -> bool:
        """Delete the room for all members; return True if ``namespace`` became empty."""
        rooms = self._rooms.get(namespace)
        if rooms is None:
            return False
        members = rooms.pop(room_id, None)
        if members is None:
            return False
        for socket_id in members:
            self._unindex_socket(socket_id, namespace, room_id)
        if not rooms:
            del self._rooms[namespace]
            return True
        return False

    def remove_socket(self, socket_id: str) -> List[str]:
        """Remove ``socket_id`` from every room; return the namespaces that became empty."""
        joined = self._socket_rooms.pop(socket_id, None)
        self._room_counts.pop(socket_id, None)
        emptied: List[str] = []
        if not joined:
            return emptied
        for namespace, room_ids in joined.items():
            rooms = self._rooms.get(namespace)
            if rooms is None:
                continue
            for room_id in room_ids:
                members = rooms.get(room_id)
                if members is not None:
                    members.discard(socket_id)
                    if not members:
                        del rooms[room_id]
            if not rooms:
                del self._rooms[namespace]
                emptied.append(namespace)
        return emptied

    def _unindex_socket(self, socket_id: str, namespace: str, room_id: str) -> None:
        joined = self._socket_rooms.get(socket_id)
        if joined is None:
            return
        room_ids = joined.get(namespace)
        if room_ids is None or room_id not in room_ids:
            return
        room_ids.discard(room_id)
        self._room_counts[socket_id] -= 1
        if not room_ids:
            del joined[namespace]
        if not joined:
            del self._socket_rooms[socket_id]
            del self._room_counts[socket_id]

    # Queries -----------------------------------------------------------------------------

    def members(self, namespace: str, room_id: str) -> Set[str]:
        """The live member set of one room (internal: callers must not mutate it)."""
        rooms = self._rooms.get(namespace)
        if rooms is None:
            return _EMPTY
        return rooms.get(room_id, _EMPTY)

    def _matching_rooms(self, namespace: str, room_id: Optional[str], exact_match: bool) -> Iterable[Set[str]]:
        rooms = self._rooms.get(namespace)
        if rooms is None:
            return ()
        if room_id is None:
            return rooms.values()
        if exact_match:
            members = rooms.get(room_id)
            return (members,) if members is not None else ()
        return [m for rid, m in rooms.items() if rid.startswith(room_id)]

    def socket_ids(self, namespace: str, room_id: Optional[str] = None, *, exact_match: bool = True) -> Set[str]:
        """Socket ids in the room (prefix of room ids when not ``exact_match``; whole namespace without ``room_id``)."""
        result: Set[str] = set()
        for members in self._matching_rooms(namespace, room_id, exact_match):
            result |= members
        return result

    def socket_count(self, namespace: str, room_id: Optional[str] = None, *, exact_match: bool = True) -> int:
        """Number of distinct sockets matched as in :meth:`socket_ids`."""
        matched = list(self._matching_rooms(namespace, room_id, exact_match))
        if len(matched) == 1:
            return len(matched[0])
        return len(self.socket_ids(namespace, room_id, exact_match=exact_match))

    def _matching_namespaces(self, namespace: str, exact_match: bool) -> List[Dict[str, Set[str]]]:
        if exact_match:
            rooms = self._rooms.get(namespace)
            return [rooms] if rooms is not None else []
        return [rooms for ns, rooms in self._rooms.items() if ns.startswith(namespace)]

    def room_count(self, namespace: str, *, exact_match: bool = True) -> int:
        """Number of non-empty rooms in the namespace (namespace prefix when not ``exact_match``)."""
        return sum(len(rooms) for rooms in self._matching_namespaces(namespace, exact_match))

    def room_ids(self, namespace: str, *, exact_match: bool = True) -> List[str]:
        """Room ids of the namespace (of every namespace with that prefix when not ``exact_match``)."""
        return [rid for rooms in self._matching_namespaces(namespace, exact_match) for rid in rooms]

    def joined_rooms(self, socket_id: str, namespace: Optional[str] = None) -> Dict[str, Set[str]]:
        """Copy of ``{namespace: {room_id}}`` for the socket, optionally filtered by namespace prefix."""
        joined = self._socket_rooms.get(socket_id, {})
        return {ns: set(rids) for ns, rids in joined.items() if namespace is None or ns.startswith(namespace)}

    def is_joined(self, socket_id: str, namespace: str, room_id: Optional[str] = None) -> bool:
        """Whether the socket is in the room (in any room of the namespace without ``room_id``)."""
        room_ids = self._socket_rooms.get(socket_id, {}).get(namespace)
        if not room_ids:
            return False
        return room_id is None or room_id in room_ids

    def socket_room_count(self, socket_id: str) -> int:
        """Number of rooms ``socket_id`` is in (O(1))."""
        return self._room_counts.get(socket_id, 0)

    def socket_namespace_count(self, socket_id: str) -> int:
        """Number of namespaces ``socket_id`` has rooms in (O(1))."""
        return len(self._socket_rooms.get(socket_id, ()))

    def namespaces(self) -> List[str]:
        """Namespaces with at least one room."""
        return list(self._rooms)

    def has_namespace(self, namespace: str) -> bool:
        """Whether ``namespace`` has at least one room."""
        return namespace in self._rooms

    def snapshot(self) -> Dict[str, Dict[str, int]]:
        """``{namespace: {room_id: member_count}}`` for stats."""
        return {ns: {rid: len(m) for rid, m in rooms.items()} for ns, rooms in self._rooms.items()}

    def view(self) -> Mapping[str, Mapping[str, AbstractSet[str]]]:
        """The live ``{namespace: {room_id: members}}`` mapping, not a copy (O(1)): for readers
        that finish before the next yield (the dashboard's snapshot); never mutate it."""
        return self._rooms

    def __len__(self) -> int:
        return sum(len(rooms) for rooms in self._rooms.values())


_EMPTY: Set[str] = frozenset()  # type: ignore[assignment]
