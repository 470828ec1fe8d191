"""The dashboard's view of the cluster: a bounded JSON snapshot shaped from plain values. Pure.

The dashboard endpoint (:mod:`crossws_sync.cluster.dashboard`) reads the node's counters, its
room registry and the cluster directory, and hands them here as dicts and sets. This module
turns them into the snapshot that ``<path>/data`` answers, whose size does not grow with the
cluster's users, sockets or rooms:

* rooms: the ``limit`` largest rooms cluster-wide (members counted once across nodes) and the
  ``limit`` namespaces with the most rooms, plus totals over every room;
* rates: per-second rates between consecutive counter samples, from a ring of at most
  ``samples`` entries (:class:`RateHistory`);
* nodes: at most :data:`MAX_NODES` rows, this node first;
* every string is clipped to :data:`MAX_TEXT` characters.

Nothing here sleeps or does I/O; times are passed in.
"""
from __future__ import annotations

import heapq
from collections import deque
from typing import AbstractSet, Any, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

#: Version of the snapshot's shape (``"version"`` in the JSON).
SNAPSHOT_VERSION = 1
#: Most node rows in a snapshot (the totals still count every node).
MAX_NODES = 200
#: Longest string of a snapshot, in characters (names are at most 256 UTF-8 bytes anyway).
MAX_TEXT = 256
#: The counters a rate sample holds: client messages in and out, bus messages in and out.
RATE_KEYS = ("in", "out", "bus_in", "bus_out")

#: ``{namespace: {room_id: members}}``: one node's rooms.
RoomMap = Mapping[str, Mapping[str, AbstractSet[str]]]


def clip(text: Any, limit: int = MAX_TEXT) -> Optional[str]:
    """``text`` as ``str``, cut to ``limit`` characters (``None`` stays ``None``)."""
    if text is None:
        return None
    value = text if isinstance(text, str) else str(text)
    return value if len(value) <= limit else value[:limit - 1] + "\u2026"


class RateHistory:
    """A ring of counter samples, and the per-second rates between consecutive ones.

    Args:
        samples: how many rates are kept (the ring holds one sample more).
    """

    def __init__(self, samples: int) -> None:
        if samples < 1:
            raise ValueError("samples must be at least 1")
        self._samples: Deque[Tuple[float, Tuple[int, ...]]] = deque(maxlen=samples + 1)

    def add(self, at: float, counters: Mapping[str, int]) -> None:
        """Record the counters of :data:`RATE_KEYS` (missing ones count 0) at time ``at`` (seconds)."""
        self._samples.append((at, tuple(int(counters.get(key, 0)) for key in RATE_KEYS)))

    def __len__(self) -> int:
        return len(self._samples)

    def rates(self) -> List[Dict[str, float]]:
        """``[{"t": at, "in": per_second, "out": ..., "bus_in": ..., "bus_out": ...}]``, oldest
        first, one per pair of consecutive samples. A counter that went back (a restart, a fork)
        gives 0, never a negative rate; a pair less than 1 ms apart is skipped."""
        rates: List[Dict[str, float]] = []
        previous: Optional[Tuple[float, Tuple[int, ...]]] = None
        for sample in self._samples:
            if previous is not None:
                elapsed = sample[0] - previous[0]
                if elapsed >= 0.001:
                    row: Dict[str, float] = {"t": round(sample[0], 3)}
                    for index, key in enumerate(RATE_KEYS):
                        row[key] = round(max(0, sample[1][index] - previous[1][index]) / elapsed, 2)
                    rates.append(row)
            previous = sample
        return rates


def rank_rooms(sources: Iterable[RoomMap], limit: int) -> Dict[str, Any]:
    """The largest rooms and namespaces across nodes, and totals over all of them.

    Args:
        sources: each node's rooms (this node's and every remote node's directory entry). A
            room held on several nodes is one room; its members are counted once.
        limit: how many rooms and how many namespaces are listed.
    Returns:
        ``{"top": [{"namespace", "room", "size"}], "namespaces": [{"namespace", "rooms",
        "members"}], "total_rooms", "total_members", "total_namespaces", "limit", "truncated"}``;
        ``top`` by size then name, ``namespaces`` by room count then name; ``total_members``
        sums the rooms' sizes (a user in two rooms counts twice).
    """
    merged: Dict[Tuple[str, str], AbstractSet[str]] = {}
    for rooms in sources:
        for namespace, room_map in rooms.items():
            for room_id, members in room_map.items():
                if not members:
                    continue
                key = (namespace, room_id)
                known = merged.get(key)
                if known is None:
                    merged[key] = members  # the live set, read only: copied only when two nodes share a room
                elif not members <= known:
                    merged[key] = set(known) | members
    per_namespace: Dict[str, List[int]] = {}
    total_members = 0
    for (namespace, _), members in merged.items():
        counts = per_namespace.setdefault(namespace, [0, 0])
        counts[0] += 1
        counts[1] += len(members)
        total_members += len(members)
    top = heapq.nsmallest(limit, merged.items(), key=lambda item: (-len(item[1]), item[0]))
    namespaces = heapq.nsmallest(limit, per_namespace.items(), key=lambda item: (-item[1][0], item[0]))
    return {
        "top": [{"namespace": clip(namespace), "room": clip(room_id), "size": len(members)}
                for (namespace, room_id), members in top],
        "namespaces": [{"namespace": clip(namespace), "rooms": counts[0], "members": counts[1]}
                       for namespace, counts in namespaces],
        "total_rooms": len(merged),
        "total_members": total_members,
        "total_namespaces": len(per_namespace),
        "limit": limit,
        "truncated": len(merged) > limit or len(per_namespace) > limit,
    }


def node_health(node: Mapping[str, Any], heartbeat_interval: float, own_readiness: Tuple[bool, str]) -> str:
    """``"ok"``, ``"syncing"`` (its snapshot has not arrived), ``"late"`` (a heartbeat is overdue)
    or, for this node, the readiness reason when it is not ready."""
    if node.get("self"):
        return "ok" if own_readiness[0] else own_readiness[1]
    if not node.get("synced", True):
        return "syncing"
    if float(node.get("last_seen_ago", 0.0)) > heartbeat_interval * 1.5 + 0.25:
        return "late"
    return "ok"


def node_rows(nodes: Sequence[Mapping[str, Any]], heartbeat_interval: float,
              own_readiness: Tuple[bool, str]) -> List[Dict[str, Any]]:
    """Rows of the node table: this node first, the others by name, at most :data:`MAX_NODES`.

    Args:
        nodes: ``get_cluster_nodes()``-style dicts (``server_name``, ``users``, ``rooms``,
            ``last_seen_ago``, ``synced``, ``websocket``, ``self``).
    """
    ordered = sorted(nodes, key=lambda node: (not node.get("self"), str(node.get("server_name"))))
    return [{
        "name": clip(node.get("server_name")),
        "self": bool(node.get("self")),
        "users": int(node.get("users", 0)),
        "rooms": int(node.get("rooms", 0)),
        "last_seen_ago": round(float(node.get("last_seen_ago", 0.0)), 2),
        "websocket": bool(node.get("websocket", True)),
        "health": node_health(node, heartbeat_interval, own_readiness),
    } for node in ordered[:MAX_NODES]]


def slow_consumer_rows(entries: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The recent slow-consumer closes, newest first, with clipped socket ids."""
    return [{
        "at": round(float(entry.get("at", 0.0)), 3),
        "socket_id": clip(entry.get("socket_id")),
        "code": int(entry.get("code", 0)),
        "connected_seconds": float(entry.get("connected_seconds", 0.0)),
        "messages_sent": int(entry.get("messages_sent", 0)),
        "bytes_sent": int(entry.get("bytes_sent", 0)),
    } for entry in reversed(list(entries))]


def build_snapshot(*, node: Optional[str], now: float, interval: float, nodes: List[Dict[str, Any]],
                   online_users: int, redis: List[Dict[str, Any]], rates: List[Dict[str, float]],
                   totals: Mapping[str, int], rooms: Dict[str, Any], slow_consumers: List[Dict[str, Any]],
                   ready: Tuple[bool, str]) -> Dict[str, Any]:
    """The whole snapshot (the JSON document of ``<path>/data``); see docs/operations.md
    ("Dashboard") for each key."""
    return {
        "version": SNAPSHOT_VERSION,
        "node": clip(node),
        "generated_at": round(now, 3),
        "interval": interval,
        "ready": {"ok": ready[0], "reason": clip(ready[1])},
        "cluster": {"nodes": len(nodes), "online_users": online_users},
        "nodes": nodes,
        "redis": redis,
        "rates": rates,
        "totals": dict(totals),
        "rooms": rooms,
        "slow_consumers": slow_consumers,
    }


__all__ = ["MAX_NODES", "MAX_TEXT", "RATE_KEYS", "RateHistory", "SNAPSHOT_VERSION", "build_snapshot", "clip",
           "node_health", "node_rows", "rank_rooms", "slow_consumer_rows"]
