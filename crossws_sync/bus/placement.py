"""Which shard holds each wanted channel of a Redis Cluster node (the subscriptions as state).

A :class:`ChannelPlacement` keeps the channels a :class:`~crossws_sync.bus.cluster.ClusterNode`
wants, and for each the primary it is subscribed on (its *home*). :meth:`ChannelPlacement.place`
puts a channel on the primary serving its slot now, releasing it from its old home (without
SUNSUBSCRIBE: its slot left that shard, which has already dropped it); a channel whose slot has
no known owner stays without a home until the next topology read. It owns no connection: the
shards' :class:`~crossws_sync.bus.shards.ShardSubscriber` objects do the SSUBSCRIBEs, and the
node decides when to place again (topology change, MOVED, an ``sunsubscribe`` push).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from gevent.event import Event

from ..wire.slots import Address, key_slot


def _now() -> float:
    return time.monotonic()


class ChannelPlacement:
    """The wanted channels of one cluster node and their homes.

    Args:
        owner: the primary serving a slot now (``None``: unknown).
        shard_at: the shard object of a primary (created if needed); it has a ``subscriber``
            (:class:`~crossws_sync.bus.shards.ShardSubscriber`).
        shard: the shard object of a primary if it exists, else ``None``.
        stats: counters; ``rehomed`` is counted here.
    """

    def __init__(self, *, owner: Callable[[int], Optional[Address]], shard_at: Callable[[Address], Any],
                 shard: Callable[[Address], Any], stats: Dict[str, int]) -> None:
        self._owner = owner
        self._shard_at = shard_at
        self._shard = shard
        self.stats = stats
        #: channels this node keeps subscribed
        self.wanted: Set[str] = set()
        #: channel -> the primary it is subscribed on
        self.home: Dict[str, Address] = {}
        #: channels a shard refused (not wanted any more), with the error
        self.failed: Dict[str, str] = {}
        self._slots: Dict[str, int] = {}
        self._changed = Event()

    # Public API ---------------------------------------------------------------------------

    def slot(self, channel: str) -> int:
        """The slot of a wanted channel (computed once)."""
        slot = self._slots.get(channel)
        if slot is None:
            slot = self._slots[channel] = key_slot(channel)
        return slot

    def want(self, channels: Iterable[str]) -> List[str]:
        """Add ``channels`` to the wanted set (clearing an old refusal); return them as a list."""
        channels = list(channels)
        for channel in channels:
            self.failed.pop(channel, None)
        self.wanted.update(channels)
        return channels

    def place(self, channels: Iterable[str]) -> None:
        """Put each wanted channel on the primary serving its slot now, releasing it elsewhere."""
        moves: Dict[Address, List[str]] = {}
        for channel in channels:
            if channel not in self.wanted:
                continue
            owner = self._owner(self.slot(channel))
            home = self.home.get(channel)
            if home == owner and owner is not None:
                continue
            if home is not None:
                old = self._shard(home)
                if old is not None:
                    old.subscriber.release([channel], unsubscribe=False)  # its slot left that shard
                del self.home[channel]
                self.stats["rehomed"] += 1
            if owner is not None:
                self.home[channel] = owner
                moves.setdefault(owner, []).append(channel)
        for owner, group in moves.items():
            self._shard_at(owner).subscriber.assign(group)

    def place_slot(self, slot: int) -> None:
        """:meth:`place` every wanted channel of one slot (after a MOVED for it)."""
        self.place([channel for channel in self.wanted if self.slot(channel) == slot])

    def unsubscribe(self, channels: Iterable[str]) -> None:
        """Stop wanting ``channels``; SUNSUBSCRIBE them on their homes."""
        by_shard: Dict[Address, List[str]] = {}
        for channel in channels:
            self.wanted.discard(channel)
            self.failed.pop(channel, None)
            self._slots.pop(channel, None)
            address = self.home.pop(channel, None)
            if address is not None:
                by_shard.setdefault(address, []).append(channel)
        for address, group in by_shard.items():
            shard = self._shard(address)
            if shard is not None:
                shard.subscriber.release(group, unsubscribe=True)
        self.notify()

    def moved(self, address: Address, channels: List[str]) -> None:
        """The primary at ``address`` no longer serves ``channels``: they are homeless until placed."""
        for channel in channels:
            if self.home.get(channel) == address:
                del self.home[channel]

    def refused(self, address: Address, channels: List[str], error: str) -> None:
        """The primary refused ``channels`` for good: not wanted any more, the error kept."""
        for channel in channels:
            self.failed[channel] = error
            self.wanted.discard(channel)
            self._slots.pop(channel, None)
            if self.home.get(channel) == address:
                del self.home[channel]
        self.notify()

    def forget_shard(self, address: Address, channels: Iterable[str]) -> None:
        """A primary is gone: its channels are homeless until placed again."""
        self.moved(address, list(channels))

    # Status -------------------------------------------------------------------------------

    def is_subscribed(self, channel: str) -> bool:
        """Whether ``channel`` is confirmed on its home."""
        address = self.home.get(channel)
        shard = self._shard(address) if address else None
        return shard is not None and bool(shard.subscriber.is_subscribed(channel))

    def status(self, channel: str, closed: bool) -> str:
        """``ok``, ``pending``, ``down`` (no home or its subscriber is disconnected) or ``failed: ...``."""
        if channel in self.failed:
            return "failed: %s" % self.failed[channel]
        if closed:
            return "down"
        if channel not in self.wanted:
            return "failed: unsubscribed meanwhile"
        address = self.home.get(channel)
        shard = self._shard(address) if address else None
        if shard is None or not shard.subscriber.connected:
            return "down"
        return "ok" if shard.subscriber.is_subscribed(channel) else "pending"

    def wait(self, channels: Iterable[str], deadline: float, closed: Callable[[], bool]) -> Dict[str, str]:
        """Statuses of ``channels`` once none is pending (``timeout`` for those still pending at ``deadline``)."""
        channels = list(channels)
        while True:
            statuses = {channel: self.status(channel, closed()) for channel in channels}
            if "pending" not in statuses.values():
                return statuses
            remaining = deadline - _now()
            if remaining <= 0:
                return {c: ("timeout" if s == "pending" else s) for c, s in statuses.items()}
            self._changed.wait(min(remaining, 0.1))

    @property
    def homeless(self) -> int:
        """How many wanted channels have no home."""
        return len(self.wanted) - len(self.home)

    @property
    def missing(self) -> Dict[str, str]:
        """Wanted channels without a home (``no owner``) and refused ones, with the reason."""
        result = {channel: "no owner" for channel in self.wanted if channel not in self.home}
        result.update({channel: "refused: " + error for channel, error in self.failed.items()})
        return result

    def notify(self) -> None:
        """Wake every :meth:`wait` caller."""
        changed, self._changed = self._changed, Event()
        changed.set()


__all__ = ["ChannelPlacement"]
