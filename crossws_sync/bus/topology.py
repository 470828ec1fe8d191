"""Which primary of a Redis Cluster serves each slot, one shard per primary, and commands routed
to the primary of a key's slot, following ``MOVED`` and ``ASK``.

A :class:`ClusterTopology` belongs to one :class:`~crossws_sync.bus.cluster.ClusterNode`. It keeps
the slot table of the last ``CLUSTER SLOTS`` read (:meth:`ClusterTopology.read_slots`, asked of
:meth:`ClusterTopology.candidates` in order: live primaries, replicas, primaries that are down,
seeds) and the shard of each primary (made by the node's ``make_shard``). A ``MOVED`` names the
slot's new primary: it is taken into the table at once and the node is told (``on_slot_moved``)
and asked for a full refresh (``on_stale``); an ``ASK`` is followed once with ``ASKING``. The node
decides when to read the topology again and what a change means (re-homing, health, events).
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import gevent
import redis

from ..errors import RedisUnavailableError
from ..wire.slots import Address, Redirect, SlotRange, key_slot, parse_cluster_slots, parse_redirect, slot_owners
from .connection import RedisConnection, RedisSettings
from .publisher import NoWaitCommand
from .shards import Shard

#: Redirections followed for one command before giving up.
MAX_REDIRECTS = 3


def _now() -> float:
    return time.monotonic()


def address_label(address: Address) -> str:
    """``host:port`` of a cluster node."""
    return "%s:%d" % address


class ClusterTopology:
    """The slot table and the shards of one cluster node (see the module docstring).

    Args:
        label: the node's label (for errors and logs).
        seeds: the configured cluster nodes, asked last for the topology.
        settings: how every node of the cluster is reached (its address replaced).
        command_timeout: bounds a ``CLUSTER SLOTS`` read (at most one second).
        make_shard: a new shard for a primary (address, its settings).
        on_stale: a full topology read is wanted (a shard failed, a slot has no known owner).
        on_slot_moved: a ``MOVED`` gave a slot a new owner in the table.
        closed: the node is closed: no shard is made, commands are refused.
        stats: the node's counters; ``moved`` and ``ask`` are counted here.
    """

    def __init__(self, *, label: str, seeds: Sequence[Address], settings: RedisSettings, command_timeout: float,
                 make_shard: Callable[[Address, RedisSettings], Shard], on_stale: Callable[[], None],
                 on_slot_moved: Callable[[int], None], closed: Callable[[], bool], stats: Dict[str, int]) -> None:
        self.label = label
        self.seeds = list(seeds)
        self.settings = settings
        self.command_timeout = command_timeout
        self._make_shard = make_shard
        self._on_stale = on_stale
        self._on_slot_moved = on_slot_moved
        self._closed = closed
        self.stats = stats
        #: The slot ranges of the last read (empty: none yet).
        self.ranges: List[SlotRange] = []
        #: slot -> its primary (empty: no topology yet).
        self.owners: List[Optional[Address]] = []
        #: primary -> its shard
        self.shards: Dict[Address, Shard] = {}

    # The slot table -----------------------------------------------------------------------

    def owner(self, slot: int) -> Optional[Address]:
        """The primary serving ``slot`` (``None``: unknown)."""
        return self.owners[slot] if self.owners else None

    def owner_of(self, name: str) -> Optional[str]:
        """``host:port`` of the primary serving ``name``'s slot (``None``: unknown)."""
        address = self.owner(key_slot(name))
        return address_label(address) if address else None

    @property
    def layout(self) -> Dict[str, List[Tuple[int, int]]]:
        """``{"host:port": [(first slot, last slot), ...]}`` of the current primaries."""
        result: Dict[str, List[Tuple[int, int]]] = {}
        for start, end, primary, _ in self.ranges:
            result.setdefault(address_label(primary), []).append((start, end))
        return result

    def candidates(self) -> List[Address]:
        """Where to read the topology, in order: live primaries, replicas, other primaries, seeds."""
        up = [s.address for s in self.shards.values() if s.publisher_up]
        others = [s.address for s in self.shards.values() if not s.publisher_up]
        replicas = [r for rng in self.ranges for r in rng.replicas]
        seen: Set[Address] = set()
        ordered = []
        for address in up + replicas + others + self.seeds:
            if address not in seen:
                seen.add(address)
                ordered.append(address)
        return ordered

    def read_slots(self, address: Address) -> List[SlotRange]:
        """``CLUSTER SLOTS`` of the node at ``address``, on a fresh connection (blocks).

        Raises:
            redis.RedisError, OSError: the node could not be reached or answered an error.
            ValueError: it serves no slot.
        """
        settings = replace(self.settings, host=address[0], port=address[1],
                           connect_timeout=min(self.settings.connect_timeout or 1.0, 1.0),
                           timeout=min(self.command_timeout, 1.0))
        conn = RedisConnection.open(settings)
        try:
            conn.sendall(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n")
            reply = conn.next(settings.timeout)
        finally:
            conn.close()
        if isinstance(reply, redis.ResponseError):
            raise reply
        ranges = parse_cluster_slots(reply, address[0])
        if not ranges:
            raise ValueError("no slot is served")
        return ranges

    def read(self, on_error: Callable[[str], None]) -> Tuple[Optional[List[SlotRange]], List[str]]:
        """Read the topology from the first of :meth:`candidates` that answers (blocks).

        Args:
            on_error: called with each failed node's error text.

        Returns:
            ``(ranges, errors)``: ``ranges`` is ``None`` when no node answered (or the node closed).
        """
        errors: List[str] = []
        for address in self.candidates():
            if self._closed():
                return None, errors
            try:
                return self.read_slots(address), errors
            except (redis.RedisError, OSError, ValueError) as exc:
                errors.append("%s: %s" % (address_label(address), exc))
                on_error(str(exc))
        return None, errors

    def update(self, ranges: List[SlotRange]) -> List[Optional[Address]]:
        """Take ``ranges`` as the topology and make a shard for each new primary.

        Returns:
            The previous slot -> primary table.
        """
        old_owners = self.owners
        self.ranges, self.owners = ranges, slot_owners(ranges)
        for address in {rng.primary for rng in ranges}:
            self.shard_at(address)
        return old_owners

    def drop_shards(self, keep: Set[Address]) -> List[Shard]:
        """Remove the shards of primaries not in ``keep``; return them (the caller closes them)."""
        return [self.shards.pop(address) for address in [a for a in self.shards if a not in keep]]

    # Shards -------------------------------------------------------------------------------

    def shard_for(self, name: str) -> Shard:
        """The shard serving ``name``'s slot.

        Raises:
            RedisUnavailableError: closed, or no primary is known for the slot (a refresh is asked).
        """
        if self._closed():
            raise RedisUnavailableError("redis cluster %s closed" % self.label)
        address = self.owner(key_slot(name))
        if address is None:
            self._on_stale()
            raise RedisUnavailableError("redis cluster %s: no primary known for the slot of %r" % (self.label, name))
        return self.shard_at(address)

    def shard_at(self, address: Address) -> Shard:
        """The shard of the primary at ``address``, made if needed.

        Raises:
            RedisUnavailableError: a new shard is needed but the node is closed.
        """
        shard = self.shards.get(address)
        if shard is None:
            if self._closed():
                raise RedisUnavailableError("redis cluster %s closed" % self.label)
            shard = self.shards[address] = self._make_shard(address, replace(self.settings, host=address[0],
                                                                              port=address[1]))
        return shard

    def follow(self, redirect: Redirect) -> None:
        """A MOVED names the slot's new primary: take it at once, refresh the rest in the background."""
        self.stats["ask" if redirect.kind == "ASK" else "moved"] += 1
        if redirect.kind == "MOVED" and self.owners:
            self.owners[redirect.slot] = redirect.address
            self._on_slot_moved(redirect.slot)
        self._on_stale()

    def ping_shards(self, timeout: float, *, on_down: Callable[[Shard, str], None],
                    on_up: Callable[[], None]) -> Optional[float]:
        """PING every shard's primary at once, waiting at most ``timeout + 0.5`` seconds.

        Args:
            on_down: ``(shard, error)`` for a PING that failed.
            on_up: after each answered PING (the shard is marked up).

        Returns:
            The slowest shard's last round trip (``None``: no shard).
        """
        shards = list(self.shards.values())

        def ping(shard: Shard) -> None:
            started = _now()
            try:
                shard.command(("PING",), timeout)
            except (RedisUnavailableError, redis.RedisError) as exc:
                on_down(shard, str(exc))
                return
            shard.latency = _now() - started
            shard.publisher_up = True
            on_up()

        gevent.joinall([gevent.spawn(ping, shard) for shard in shards], timeout=timeout + 0.5)
        return max(s.latency for s in shards) if shards else None

    # Commands -----------------------------------------------------------------------------

    def command_for_key(self, key: str, *args: Any, timeout: float) -> Any:
        """Run a command on the primary serving ``key``'s slot, following MOVED / ASK.

        Raises:
            RedisUnavailableError: the shard is down or did not answer in time.
            redis.ResponseError: Redis answered with another error.
        """
        asking = False
        shard = self.shard_for(key)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                if asking:
                    shard.publisher.submit(NoWaitCommand(("ASKING",), lambda error: None))
                return shard.command(args, timeout)
            except RedisUnavailableError:
                self._on_stale()
                raise
            except redis.ResponseError as exc:
                redirect = parse_redirect(str(exc), shard.address[0])
                if redirect is None:
                    raise
                self.follow(redirect)
                asking = redirect.kind == "ASK"
                shard = self.shard_at(redirect.address) if asking else self.shard_for(key)
        raise RedisUnavailableError("redis cluster %s: too many redirections for %s" % (self.label, args[0]))

    def publish_nowait(self, channel: str, raw: bytes, fallback: Callable[[BaseException], None],
                       redirects: int = 0) -> None:
        """Queue an SPUBLISH on ``channel``'s shard without waiting; ``fallback(error)`` when lost
        (MOVED / ASK are followed first, up to :data:`MAX_REDIRECTS`).

        Raises:
            RedisUnavailableError: closed, or no known primary serves the slot.
        """
        shard = self.shard_for(channel)

        def failed(error: BaseException) -> None:
            # Runs in an I/O greenlet or the hub: never block here.
            redirect = parse_redirect(str(error), shard.address[0]) if isinstance(error, redis.ResponseError) else None
            if redirect is not None and redirects < MAX_REDIRECTS:
                gevent.spawn(self._redirected_nowait, redirect, channel, raw, fallback, redirects + 1)
                return
            if not isinstance(error, redis.ResponseError):
                self._on_stale()
            fallback(error if isinstance(error, RedisUnavailableError)
                     else RedisUnavailableError("redis shard %s: %s" % (shard.label, error)))

        shard.publisher.submit(NoWaitCommand(("SPUBLISH", channel, raw), failed))

    def _redirected_nowait(self, redirect: Redirect, channel: str, raw: bytes,
                           fallback: Callable[[BaseException], None], redirects: int) -> None:
        self.follow(redirect)
        try:
            if redirect.kind == "ASK":
                target = self.shard_at(redirect.address)
                target.publisher.submit(NoWaitCommand(("ASKING",), lambda error: None))
                target.publisher.submit(NoWaitCommand(("SPUBLISH", channel, raw), fallback))
            else:
                self.publish_nowait(channel, raw, fallback, redirects)
        except RedisUnavailableError as exc:
            fallback(exc)


__all__ = ["ClusterTopology", "MAX_REDIRECTS", "address_label"]
