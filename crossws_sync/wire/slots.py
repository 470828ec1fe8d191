"""Redis Cluster key slots, sans I/O: CRC16, hash tags, ``CLUSTER SLOTS`` replies, redirections.

A Redis Cluster splits keys *and shard channels* into :data:`SLOT_COUNT` slots:
``slot = CRC16(name) mod 16384`` (CRC16-CCITT/XMODEM, polynomial 0x1021, initial value 0). When
the name holds a *hash tag*, a ``{...}`` with at least one character between the first ``{``
and the next ``}``, only that part is hashed, so ``h:{room}`` and ``m:{room}`` share a slot.
This is the algorithm of the Redis Cluster specification (``"123456789"`` hashes to 0x31C3,
slot 12739) and of ``CLUSTER KEYSLOT``.

The bus (:mod:`crossws_sync.bus.cluster`) uses these functions to find the shard that owns a
channel (SPUBLISH / SSUBSCRIBE) or a key (the history store's commands), to group channels
so that one SSUBSCRIBE never spans two slots (no CROSSSLOT error), to read the topology from
``CLUSTER SLOTS`` and to follow ``MOVED`` / ``ASK`` redirections.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

#: Slots of a Redis Cluster.
SLOT_COUNT = 16384

Address = Tuple[str, int]


def _table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM) of ``data``, as Redis Cluster computes it."""
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_part(name: bytes) -> bytes:
    """The part of ``name`` that is hashed: the hash tag when there is a non-empty one, else all."""
    start = name.find(b"{")
    if start >= 0:
        end = name.find(b"}", start + 1)
        if end > start + 1:
            return name[start + 1:end]
    return name


def key_slot(name: Union[str, bytes]) -> int:
    """The slot of a key or shard channel (``CLUSTER KEYSLOT``); strings are hashed as UTF-8."""
    data = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else name
    return crc16(hash_part(data)) % SLOT_COUNT


def group_by_slot(names: Iterable[str]) -> Dict[int, List[str]]:
    """``{slot: [names...]}`` in first-seen order: one SSUBSCRIBE per slot never hits CROSSSLOT."""
    groups: Dict[int, List[str]] = {}
    for name in names:
        groups.setdefault(key_slot(name), []).append(name)
    return groups


class SlotRange(NamedTuple):
    """One contiguous range of slots and who serves it (from ``CLUSTER SLOTS``)."""

    start: int
    end: int
    primary: Address
    replicas: Tuple[Address, ...]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _address(entry: Any, default_host: str) -> Optional[Address]:
    if not isinstance(entry, (list, tuple)) or len(entry) < 2:
        return None
    host = _text(entry[0])
    if not host or host == "?":  # the node does not know its own address: use the one we asked
        host = default_host
    try:
        return host, int(entry[1])
    except (TypeError, ValueError):
        return None


def parse_cluster_slots(reply: Any, default_host: str = "127.0.0.1") -> List[SlotRange]:
    """The ranges of a ``CLUSTER SLOTS`` reply (RESP2), sorted by first slot.

    Args:
        reply: ``[[start, end, [host, port, id, ...], [replica host, port, id, ...]...]...]``.
        default_host: the host we asked, for entries with an empty or unknown address.

    Raises:
        ValueError: the reply does not have that shape.
    """
    if not isinstance(reply, list):
        raise ValueError("CLUSTER SLOTS reply is not a list: %r" % (reply,))
    ranges = []
    for item in reply:
        if not isinstance(item, list) or len(item) < 3:
            raise ValueError("malformed CLUSTER SLOTS entry: %r" % (item,))
        primary = _address(item[2], default_host)
        if primary is None:
            raise ValueError("malformed CLUSTER SLOTS primary: %r" % (item[2],))
        replicas = tuple(a for a in (_address(entry, default_host) for entry in item[3:]) if a is not None)
        start, end = int(item[0]), int(item[1])
        if not 0 <= start <= end < SLOT_COUNT:
            raise ValueError("CLUSTER SLOTS range out of bounds: %d-%d" % (start, end))
        ranges.append(SlotRange(start, end, primary, replicas))
    ranges.sort()
    return ranges


def slot_owners(ranges: Iterable[SlotRange]) -> List[Optional[Address]]:
    """A list of :data:`SLOT_COUNT` entries: the primary serving each slot (``None``: unserved)."""
    owners: List[Optional[Address]] = [None] * SLOT_COUNT
    for start, end, primary, _ in ranges:
        owners[start:end + 1] = [primary] * (end - start + 1)
    return owners


class TopologyChange(NamedTuple):
    """How the slot owners changed between two topology reads (see :func:`topology_change`)."""

    #: old primary that serves nothing any more -> the primaries now serving its old slots
    replaced: Dict[Address, Tuple[Address, ...]]
    #: slots that changed owner between primaries serving slots before and after (a migration)
    moved: int

    @property
    def changed(self) -> bool:
        """Whether any slot has another owner."""
        return bool(self.replaced) or self.moved > 0


def topology_change(old: List[Optional[Address]], new: List[Optional[Address]]) -> TopologyChange:
    """Compare two :func:`slot_owners` tables (an empty ``old``: the first read, no change)."""
    if not old:
        return TopologyChange({}, 0)
    still = {owner for owner in new if owner is not None}
    replaced: Dict[Address, Set[Optional[Address]]] = {}
    moved = 0
    for before, after in zip(old, new):
        if before == after or before is None:
            continue
        if before not in still:
            replaced.setdefault(before, set()).add(after)
        else:
            moved += 1
    return TopologyChange({gone: tuple(sorted(a for a in owners if a is not None)) for gone, owners in replaced.items()},
                          moved)


class Redirect(NamedTuple):
    """A ``MOVED`` or ``ASK`` error: the slot is served (for good or for one command) elsewhere."""

    kind: str
    slot: int
    address: Address


def parse_redirect(error: str, default_host: str = "127.0.0.1") -> Optional[Redirect]:
    """``MOVED 3999 127.0.0.1:6381`` / ``ASK ...`` as a :class:`Redirect`, anything else ``None``."""
    parts = error.split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    try:
        return Redirect(parts[0], int(parts[1]), (host or default_host, int(port)))
    except ValueError:
        return None


__all__ = ["Address", "Redirect", "SLOT_COUNT", "SlotRange", "TopologyChange", "crc16", "topology_change", "group_by_slot", "hash_part", "key_slot",
           "parse_cluster_slots", "parse_redirect", "slot_owners"]
