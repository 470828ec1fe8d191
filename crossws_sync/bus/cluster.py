"""A Redis Cluster as one node of the bus: sharded pub/sub (SPUBLISH / SSUBSCRIBE), slot routing.

A :class:`ClusterNode` stands in :class:`~crossws_sync.bus.nodes.RedisNodeSet` for a whole Redis
Cluster (a ``redis+cluster://`` URL or a ``{"cluster": [...]}`` entry, see
:func:`crossws_sync.config.parse_cluster_entry`), with the interface of a
:class:`~crossws_sync.bus.node.RedisNode` (publish, publish_nowait, command, subscribe tickets,
unsubscribe, health, close...). Inside:

* the **topology**: ``CLUSTER SLOTS`` of any reachable node (known primaries first, then their
  replicas, then the seeds), as a slot -> primary table. It is read at start, and again with a
  short backoff whenever a shard's connection is lost, a publish is redirected (``MOVED``) or a
  sharded channel is dropped by its shard (``sunsubscribe`` push after a slot migration);
* one **shard** per primary: a pipelined publisher connection
  (:class:`~crossws_sync.bus.publisher.Publisher`) sending ``SPUBLISH``, and a sharded subscriber
  (:class:`~crossws_sync.bus.shards.ShardSubscriber`) sending ``SSUBSCRIBE`` one slot per command;
* **every channel is a shard channel**: its slot (CRC16 of the name, hash tags respected, see
  :mod:`crossws_sync.wire.slots`) names the one shard that carries it, so a message crosses one
  primary and never the cluster bus (plain PUBLISH is forwarded to every node of the cluster);
* **re-homing** (:class:`~crossws_sync.bus.placement.ChannelPlacement`): a channel whose slot
  now belongs to another primary (failover, migration) is released from the old shard and
  subscribed on the new owner; nothing is ever sent to a shard
  for a slot it does not serve, and no SSUBSCRIBE spans two slots, so no ``CROSSSLOT``.

Health: ``publisher_healthy`` while at least one shard primary answers (a message whose shard is
down fails fast, the others flow); ``subscriber_healthy`` while every shard's subscriber is up
and every wanted channel is confirmed on its owner. Besides the flips, the health hook is told
``cluster_topology`` (first topology, or a new shard), ``cluster_failover`` (a primary was
replaced: ``shard`` old address, ``new_primary``) and ``cluster_slots_moved`` (slots changed
owner between live primaries), with those details in :attr:`event_details`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import gevent
from gevent.event import Event

import redis

from ..config import ClusterConfig, parse_cluster_entry
from ..errors import RedisUnavailableError
from ..io.supervisor import supervise
from ..wire.slots import (Address, Redirect, SlotRange, key_slot, parse_cluster_slots, parse_redirect, slot_owners,
                          topology_change)
from .connection import RedisConnection, RedisSettings, settings_from
from .node import NODE_COUNTS
from .publisher import Command, NoWaitCommand, Publisher
from .placement import ChannelPlacement
from .settings import is_auth_error, make_client, require_monkey_patched
from .shards import ShardSubscriber
from .subscriber import SubscribeTicket

logger = logging.getLogger("crossws_sync.nodes")

#: Redirections followed for one command before giving up.
MAX_REDIRECTS = 3
_REFRESH_FIRST = 0.05
_REFRESH_MAX = 0.5
#: Shortest time between two topology reads (CLUSTER SLOTS on a fresh connection).
_REFRESH_GAP = 0.1


def _now() -> float:
    return time.monotonic()


def _label(address: Address) -> str:
    return "%s:%d" % address


class Shard:
    """One primary: its publisher connection and its sharded subscriber."""

    def __init__(self, node: "ClusterNode", address: Address, settings: RedisSettings) -> None:
        self.address = address
        self.label = _label(address)
        self.settings = settings
        self.closed = False
        self.publisher_up = False
        self.latency = 0.0
        self.publisher = Publisher(lambda: RedisConnection.open(settings), label=self.label,
                                   on_down=lambda event, error: node._shard_publisher_down(self, error),
                                   command_timeout=node.command_timeout)
        sub_settings = settings.replace_timeout(node.command_timeout)
        self.subscriber = ShardSubscriber(
            lambda: RedisConnection.open(sub_settings), label=self.label,
            on_message=lambda channel, raw: node._on_message(node, channel, raw),
            on_moved=lambda channels, reason, error: node._channels_moved(self, channels, reason, error),
            on_refused=lambda channels, error: node._channels_refused(self, channels, error),
            on_state=lambda up, error: node._shard_subscriber_state(self, up, error),
            on_change=node._subscriptions_changed,
            closed=lambda: node.closed or node.abandoned,
            ping_interval=node.ping_interval, ping_timeout=node.ping_timeout, force_ping=node.force_ping)
        self.greenlets = [
            gevent.spawn(supervise, loop, "%s of redis shard %s" % (name, self.label), logger,
                         stopped=lambda: node.closed or self.closed, backoff=0.05)
            for loop, name in ((self.publisher.writer_loop, "publisher writer"),
                               (self.subscriber.run, "sharded subscriber"))]

    def command(self, args: Tuple[Any, ...], timeout: float) -> Any:
        """One command on this primary's publisher connection (pipelined)."""
        command = Command(args)
        self.publisher.submit(command)
        try:
            return command.result.get(timeout=timeout)
        except gevent.Timeout:
            command.cancelled = True
            raise RedisUnavailableError("redis shard %s did not answer %s within %.1fs"
                                        % (self.label, args[0], timeout)) from None

    def close(self) -> None:
        self.closed = True
        self.subscriber.stop()
        self.publisher.close()
        current = gevent.getcurrent()
        gevent.killall([g for g in self.greenlets if g is not current], block=False)


class ClusterNode:
    """A Redis Cluster as one bus node (see the module docstring).

    Args:
        config: the cluster entry (URL or dict, or a parsed :class:`ClusterConfig`).
        server_name, on_message, on_health_change, on_subscription_error, ping_interval,
        ping_timeout, force_ping, connect_timeout, command_timeout, recovery_grace,
        name_check_channel, on_name_conflict: as for :class:`~crossws_sync.bus.node.RedisNode`
            (the name check counts with ``PUBSUB SHARDNUMSUB`` on the channel's shard).

    Raises:
        MonkeyPatchError: gevent monkey-patching is missing.
        ConfigError: invalid ``config``.
    """

    is_cluster = True

    def __init__(self, config: Any, *, server_name: str, on_message: Callable[[Any, str, bytes], None],
                 on_health_change: Callable[[Any, str, bool, str, Optional[str]], None],
                 on_subscription_error: Callable[[Any, str, str, str], None],
                 ping_interval: float = 5.0, ping_timeout: float = 2.0, force_ping: bool = True,
                 connect_timeout: float = 2.0, command_timeout: Optional[float] = None,
                 recovery_grace: float = 1.0, name_check_channel: Optional[str] = None,
                 on_name_conflict: Optional[Callable[[Any, int], None]] = None) -> None:
        require_monkey_patched()
        self.config = config
        self.cluster: ClusterConfig = config if isinstance(config, ClusterConfig) else parse_cluster_entry(config)
        self.server_name = server_name
        self._on_message = on_message
        self._on_health_change = on_health_change
        self._on_subscription_error = on_subscription_error
        self.ping_interval = float(ping_interval)
        self.ping_timeout = float(ping_timeout)
        self.force_ping = bool(force_ping)
        self.recovery_grace = float(recovery_grace)
        self.command_timeout = float(command_timeout if command_timeout is not None else max(ping_timeout, 1.0))
        first = self.cluster.seeds[0]
        pool = make_client(self.cluster.node_config(*first), connect_timeout=connect_timeout,
                           command_timeout=self.command_timeout).connection_pool
        #: Settings of the first seed; every node of the cluster is reached with these and its own address.
        self.settings: RedisSettings = settings_from(pool.connection_class, pool.connection_kwargs)
        self.host, self.port, self.db = first[0], first[1], 0
        self._name_check_channel = name_check_channel
        self._on_name_conflict = on_name_conflict
        self._name_checked = False

        self.publisher_healthy = False
        self.subscriber_healthy = False
        self.latency = 0.0
        self.auth_failed = False
        self.retiring = False
        #: Details of the last cluster event reported to the health hook (shard, new_primary, slots...).
        self.event_details: Dict[str, Any] = {}
        #: Counters: topology refreshes, redirects followed, channels re-homed, refusals.
        self.stats: Dict[str, int] = dict.fromkeys(
            ("topology_refreshes", "topology_changes", "failovers", "moved", "ask", "rehomed", "crossslot",
             "refused"), 0)
        #: what went through this node, as :attr:`RedisNode.counts`
        self.counts: Dict[str, int] = dict.fromkeys(NODE_COUNTS, 0)
        self._eligible_at = 0.0
        self._grace_on_heal = False
        self._ranges: List[SlotRange] = []
        self._owners: List[Optional[Address]] = []
        self._shards: Dict[Address, Shard] = {}
        self._placement = ChannelPlacement(
            owner=lambda slot: self._owners[slot] if self._owners else None, shard_at=self._shard_at,
            shard=self._shards.get, stats=self.stats)
        self._stale = True
        self._wake = Event()
        self._started = Event()
        self.closed = False
        self.abandoned = False
        self._greenlets: List[gevent.Greenlet] = []

    def __repr__(self) -> str:
        return "ClusterNode(%s, shards=%d, publisher=%s, subscriber=%s)" % (
            self.label, len(self._shards), "up" if self.publisher_healthy else "down",
            "up" if self.subscriber_healthy else "down")

    @property
    def label(self) -> str:
        """``cluster(h1:7000,h2:7001)`` from the seeds (never the password)."""
        return "cluster(%s)" % ",".join(_label(seed) for seed in self.cluster.seeds)

    @property
    def eligible(self) -> bool:
        """Healthy for publishing (as for :class:`RedisNode`); after a topology change only once
        ``recovery_grace`` passed, so that every server has re-homed its channels."""
        return (self.publisher_healthy and self.subscriber_healthy and not self.retiring
                and _now() >= self._eligible_at)

    @property
    def shards(self) -> Dict[str, List[Tuple[int, int]]]:
        """``{"host:port": [(first slot, last slot), ...]}`` of the current primaries."""
        result: Dict[str, List[Tuple[int, int]]] = {}
        for start, end, primary, _ in self._ranges:
            result.setdefault(_label(primary), []).append((start, end))
        return result

    def owner_of(self, name: str) -> Optional[str]:
        """``host:port`` of the primary serving ``name``'s slot (``None``: unknown)."""
        address = self._owners[key_slot(name)] if self._owners else None
        return _label(address) if address else None

    # Lifecycle ----------------------------------------------------------------------------

    def start(self, channels: Iterable[str] = (), *, joining: bool = False) -> None:
        """Read the topology, connect every shard and subscribe ``channels`` (in the background)."""
        self._placement.want(channels)
        self._grace_on_heal = joining
        self._greenlets = [gevent.spawn(supervise, self._topology_loop, "topology of %s" % self.label, logger,
                                        stopped=lambda: self.closed, backoff=0.05)]

    def wait_started(self, timeout: float) -> bool:
        """Wait until the first topology read and every shard's first connection attempt."""
        return self._started.wait(timeout) is True

    def abandon(self) -> None:
        """Mark the node closed for the loops inherited by a forked child."""
        self.abandoned = True

    def close(self) -> None:
        """Stop every greenlet and close every connection; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current], block=True, timeout=5)
        for shard in list(self._shards.values()):
            shard.close()
        self._shards.clear()
        self.publisher_healthy = self.subscriber_healthy = False
        self._placement.notify()

    # Publishing ---------------------------------------------------------------------------

    def publish(self, channel: str, raw: bytes) -> int:
        """SPUBLISH ``raw`` on ``channel``'s shard, following MOVED / ASK; return the receivers.

        Raises:
            RedisUnavailableError: the shard could not take it (failing fast; the topology is
                refreshed in the background).
        """
        try:
            return int(self.command_for_key(channel, "SPUBLISH", channel, raw))
        except redis.RedisError as exc:
            raise RedisUnavailableError("redis cluster refused SPUBLISH on %s: %s" % (channel, exc)) from None

    def publish_nowait(self, channel: str, raw: bytes, fallback: Callable[[BaseException], None],
                       redirects: int = 0) -> None:
        """Queue an SPUBLISH on ``channel``'s shard without waiting; ``fallback(error)`` when lost.

        Raises:
            RedisUnavailableError: closed, or no known primary serves the slot.
        """
        shard = self._shard_for(channel)

        def failed(error: BaseException) -> None:
            # Runs in an I/O greenlet or the hub: never block here.
            redirect = parse_redirect(str(error), shard.address[0]) if isinstance(error, redis.ResponseError) else None
            if redirect is not None and redirects < MAX_REDIRECTS:
                gevent.spawn(self._redirected_nowait, redirect, channel, raw, fallback, redirects + 1)
                return
            if not isinstance(error, redis.ResponseError):
                self._mark_stale()
            fallback(error if isinstance(error, RedisUnavailableError)
                     else RedisUnavailableError("redis shard %s: %s" % (shard.label, error)))

        shard.publisher.submit(NoWaitCommand(("SPUBLISH", channel, raw), failed))

    def _redirected_nowait(self, redirect: Redirect, channel: str, raw: bytes,
                           fallback: Callable[[BaseException], None], redirects: int) -> None:
        self._follow(redirect)
        try:
            if redirect.kind == "ASK":
                target = self._shard_at(redirect.address)
                target.publisher.submit(NoWaitCommand(("ASKING",), lambda error: None))
                target.publisher.submit(NoWaitCommand(("SPUBLISH", channel, raw), fallback))
            else:
                self.publish_nowait(channel, raw, fallback, redirects)
        except RedisUnavailableError as exc:
            fallback(exc)

    # Commands -----------------------------------------------------------------------------

    def command(self, *args: Any, timeout: Optional[float] = None) -> Any:
        """Run a keyless command on one live primary.

        Raises:
            RedisUnavailableError: no primary answered.
        """
        wait = timeout if timeout is not None else 2 * self.command_timeout + 0.5
        shards = sorted(self._shards.values(), key=lambda s: not s.publisher_up)
        if not shards or self.closed:
            raise RedisUnavailableError("redis cluster %s: no shard known" % self.label)
        return shards[0].command(args, wait)

    def command_for_key(self, key: str, *args: Any, timeout: Optional[float] = None) -> Any:
        """Run a command on the primary serving ``key``'s slot, following MOVED / ASK.

        Args:
            key: the key (or shard channel) that routes the command.
            args: the command and its arguments.

        Raises:
            RedisUnavailableError: the shard is down or did not answer in time.
            redis.ResponseError: Redis answered with another error.
        """
        wait = timeout if timeout is not None else 2 * self.command_timeout + 0.5
        asking = False
        shard = self._shard_for(key)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                if asking:
                    shard.publisher.submit(NoWaitCommand(("ASKING",), lambda error: None))
                return shard.command(args, wait)
            except RedisUnavailableError:
                self._mark_stale()
                raise
            except redis.ResponseError as exc:
                redirect = parse_redirect(str(exc), shard.address[0])
                if redirect is None:
                    raise
                self._follow(redirect)
                asking = redirect.kind == "ASK"
                shard = self._shard_at(redirect.address) if asking else self._shard_for(key)
        raise RedisUnavailableError("redis cluster %s: too many redirections for %s" % (self.label, args[0]))

    # Subscribing --------------------------------------------------------------------------

    @property
    def wanted_channels(self) -> Set[str]:
        """A copy of the channels this node keeps subscribed (each on its slot's shard)."""
        return set(self._placement.wanted)

    @property
    def missing_channels(self) -> Dict[str, str]:
        """Wanted channels that no shard holds now, and refused ones, with the reason (a copy)."""
        return self._placement.missing

    def request_subscribe(self, channels: Iterable[str]) -> SubscribeTicket:
        """Add ``channels`` to the wanted set and SSUBSCRIBE them on their shards (non-blocking)."""
        self._placement.place(self._placement.want(channels))
        self._update_subscriber_health("subscribe")
        return SubscribeTicket(0, {})

    def wait_ticket(self, ticket: SubscribeTicket, channels: Iterable[str], deadline: float) -> Dict[str, str]:
        """Wait until each channel is confirmed on its shard: ``ok``, ``down``, ``failed: ...``
        or ``timeout`` (as :meth:`RedisNode.wait_ticket`)."""
        return self._placement.wait(channels, deadline, lambda: self.closed)

    def is_subscribed(self, channel: str) -> bool:
        """Whether ``channel`` is confirmed on the shard that serves its slot."""
        return self._placement.is_subscribed(channel)

    def unsubscribe(self, channels: Iterable[str]) -> None:
        """Remove ``channels`` from the wanted set and SUNSUBSCRIBE them on their shards."""
        self._placement.unsubscribe(channels)
        self._update_subscriber_health("unsubscribe")

    # Internals: placement -----------------------------------------------------------------

    def _shard_for(self, name: str) -> Shard:
        if self.closed:
            raise RedisUnavailableError("redis cluster %s closed" % self.label)
        address = self._owners[key_slot(name)] if self._owners else None
        if address is None:
            self._mark_stale()
            raise RedisUnavailableError("redis cluster %s: no primary known for the slot of %r" % (self.label, name))
        return self._shard_at(address)

    def _shard_at(self, address: Address) -> Shard:
        shard = self._shards.get(address)
        if shard is None:
            if self.closed:
                raise RedisUnavailableError("redis cluster %s closed" % self.label)
            shard = self._shards[address] = Shard(self, address, replace(self.settings, host=address[0],
                                                                         port=address[1]))
        return shard

    def _follow(self, redirect: Redirect) -> None:
        """A MOVED names the slot's new primary: take it at once, refresh the rest in the background."""
        self.stats["ask" if redirect.kind == "ASK" else "moved"] += 1
        if redirect.kind == "MOVED" and self._owners:
            self._owners[redirect.slot] = redirect.address
            self._placement.place_slot(redirect.slot)
            self._update_subscriber_health("slot_moved")
        self._mark_stale()

    def _channels_moved(self, shard: Shard, channels: List[str], reason: str, error: Optional[str]) -> None:
        logger.info("redis shard %s no longer serves %d wanted channel(s) (%s); refreshing the topology",
                    shard.label, len(channels), reason)
        redirect = parse_redirect(error, shard.address[0]) if error else None
        self._placement.moved(shard.address, channels)  # released here; placed again by the refresh
        shard.subscriber.release(channels, unsubscribe=False)
        if redirect is not None:
            self._follow(redirect)
            self._placement.place(channels)
        self._mark_stale()
        self._update_subscriber_health("slot_moved")

    def _channels_refused(self, shard: Shard, channels: List[str], error: str) -> None:
        self.stats["crossslot" if error.startswith("CROSSSLOT") else "refused"] += 1
        logger.warning("redis shard %s refused SSUBSCRIBE of %d channel(s): %s", shard.label, len(channels), error)
        self._placement.refused(shard.address, channels, error)
        for channel in channels:
            try:
                self._on_subscription_error(self, channel, "subscribe", error)
            except Exception:
                logger.exception("on_subscription_error hook failed")
        shard.subscriber.release(channels, unsubscribe=False)

    # Internals: topology ------------------------------------------------------------------

    def _mark_stale(self) -> None:
        self._stale = True
        self._wake.set()

    def _topology_loop(self) -> None:
        delay = _REFRESH_FIRST
        next_ping = 0.0
        last_refresh = 0.0
        while not (self.closed or self.abandoned):
            # Every failed publish asks for a refresh: at most one per _REFRESH_GAP, whatever the load.
            if (self._stale or not self._owners) and _now() - last_refresh >= _REFRESH_GAP:
                last_refresh = _now()
                delay = _REFRESH_FIRST if self._refresh() else min(delay * 2, _REFRESH_MAX)
            if _now() >= next_ping or self._degraded():
                self._ping_shards()
                next_ping = _now() + self.ping_interval
            self._update_subscriber_health("ready")
            self._check_name()
            self._started.set()
            degraded = self._degraded()
            if degraded:
                self._stale = True  # keep refreshing until every shard is back (a failover takes a while)
            wait = delay if degraded else max(0.05, next_ping - _now())
            self._wake.clear()
            if self._wake.wait(max(wait, last_refresh + _REFRESH_GAP - _now())):
                self._wake.clear()

    def _degraded(self) -> bool:
        """No topology, a shard down, or a wanted channel without a home."""
        return (not self._owners or any(not s.publisher_up or not s.subscriber.connected for s in self._shards.values())
                or self._placement.homeless > 0)

    def _candidates(self) -> List[Address]:
        live = [s.address for s in self._shards.values() if s.publisher_up]
        others = [s.address for s in self._shards.values() if not s.publisher_up]
        replicas = [r for rng in self._ranges for r in rng.replicas]
        seen: Set[Address] = set()
        ordered = []
        for address in live + replicas + others + list(self.cluster.seeds):
            if address not in seen:
                seen.add(address)
                ordered.append(address)
        return ordered

    def _read_slots(self, address: Address) -> List[SlotRange]:
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

    def _refresh(self) -> bool:
        """Read the topology from the first node that answers; apply it if it changed."""
        self.stats["topology_refreshes"] += 1
        errors = []
        for address in self._candidates():
            if self.closed:
                return False
            try:
                ranges = self._read_slots(address)
            except (redis.RedisError, OSError, ValueError) as exc:
                errors.append("%s: %s" % (_label(address), exc))
                if is_auth_error(str(exc)):
                    self._auth(False, str(exc))
                continue
            self._auth(True, None)
            self._stale = False
            self._apply(ranges)
            return True
        if not self._owners:
            logger.warning("redis cluster %s: no node answered CLUSTER SLOTS (%s)", self.label, "; ".join(errors))
            self._set_publisher(False, "topology", "; ".join(errors) or "no node")
        return False

    def _apply(self, ranges: List[SlotRange]) -> None:
        if ranges == self._ranges:
            return
        old_ranges, old_owners = self._ranges, self._owners
        self._ranges, self._owners = ranges, slot_owners(ranges)
        primaries = {rng.primary for rng in ranges}
        first = not old_ranges
        self.stats["topology_changes"] += 0 if first else 1  # replicas included
        for address in primaries:
            self._shard_at(address)
        self._placement.place(sorted(self._placement.wanted))
        self._update_subscriber_health("topology")
        for address in [a for a in self._shards if a not in primaries]:
            shard = self._shards.pop(address)
            self._placement.forget_shard(address, shard.subscriber.assigned)
            shard.close()
        if first:
            logger.info("redis cluster %s: %d shard(s)", self.label, len(primaries))
            self._event("cluster_topology", shards=sorted(_label(p) for p in primaries))
            return
        change = topology_change(old_owners, self._owners)
        if not change.changed:
            return  # replicas only
        # As for a recovered node: peers re-home their channels on their own refresh; give them
        # recovery_grace before the outage buffers flush through this node (see ``eligible``).
        self._eligible_at = _now() + self.recovery_grace
        for gone, successors in sorted(change.replaced.items()):
            new_primary = ", ".join(_label(a) for a in successors) or "none"
            self.stats["failovers"] += 1
            logger.warning("redis cluster %s: primary %s replaced by %s", self.label, _label(gone), new_primary)
            self._event("cluster_failover", shard=_label(gone), new_primary=new_primary)
        if change.moved:
            logger.info("redis cluster %s: %d slot(s) changed primary", self.label, change.moved)
            self._event("cluster_slots_moved", slots=change.moved)

    def _ping_shards(self) -> None:
        shards = list(self._shards.values())

        def ping(shard: Shard) -> None:
            started = _now()
            try:
                shard.command(("PING",), self.ping_timeout)
            except (RedisUnavailableError, redis.RedisError) as exc:
                self._shard_publisher_down(shard, str(exc))
                return
            shard.latency = _now() - started
            shard.publisher_up = True
            self._update_publisher_health("ping")

        gevent.joinall([gevent.spawn(ping, shard) for shard in shards], timeout=self.ping_timeout + 0.5)
        if shards:
            self.latency = max(s.latency for s in shards)

    def _check_name(self) -> None:
        channel = self._name_check_channel
        if self._name_checked or not channel or not self.is_subscribed(channel):
            return
        self._name_checked = True
        try:
            reply = self.command_for_key(channel, "PUBSUB", "SHARDNUMSUB", channel, timeout=self.ping_timeout)
            count = int(reply[1]) if isinstance(reply, list) and len(reply) > 1 else 0
        except (RedisUnavailableError, redis.RedisError, ValueError) as exc:
            logger.debug("server name check on %s failed: %s", self.label, exc)
            return
        if count > 1 and self._on_name_conflict is not None:
            self._on_name_conflict(self, count)

    # Internals: health --------------------------------------------------------------------

    def _shard_publisher_down(self, shard: Shard, error: str) -> None:
        if shard.publisher_up:
            logger.warning("redis shard %s publisher down: %s", shard.label, error)
        shard.publisher_up = False
        self._mark_stale()
        self._update_publisher_health("error", "shard %s: %s" % (shard.label, error))

    def _shard_subscriber_state(self, shard: Shard, up: bool, error: Optional[str]) -> None:
        if not up:
            self._mark_stale()
        self._update_subscriber_health("ready" if up else "close", None if up else "shard %s: %s" % (shard.label, error))
        self._placement.notify()

    def _subscriptions_changed(self) -> None:
        if not self.subscriber_healthy:  # a confirmation can only make it healthy
            self._update_subscriber_health("ready")
        self._placement.notify()

    def _update_publisher_health(self, event: str, error: Optional[str] = None) -> None:
        healthy = bool(self._owners) and any(s.publisher_up for s in self._shards.values())
        self._set_publisher(healthy, event, error)

    def _update_subscriber_health(self, event: str, error: Optional[str] = None) -> None:
        """Down when a shard's subscriber is disconnected or a wanted channel has no home (its
        slot moved, no owner known); up again once every wanted channel is confirmed on its
        owner. A new channel still waiting for its confirmation does not make it flap (as for
        :class:`RedisNode`)."""
        shards = list(self._shards.values())
        down = (not self._owners or not shards or not all(s.subscriber.connected for s in shards)
                or self._placement.homeless > 0)
        if self.subscriber_healthy:
            if down:
                self._set_subscriber(False, event, error)
            return
        # Cheap gate first: called on every confirmation while unhealthy, so a resubscribe of n
        # channels must not cost n full checks.
        wanted = self._placement.wanted
        if down or sum(len(s.subscriber.confirmed) for s in shards) < len(wanted):
            return
        if all(self._placement.is_subscribed(channel) for channel in wanted):
            self._set_subscriber(True, event, error)

    def _set_publisher(self, healthy: bool, event: str, error: Optional[str]) -> None:
        if healthy == self.publisher_healthy or self.closed:
            return
        self.publisher_healthy = healthy
        if healthy:
            if self._grace_on_heal:
                self._eligible_at = _now() + self.recovery_grace
            self._grace_on_heal = True
            logger.info("redis %s publisher healthy (%s)", self.label, event)
        else:
            logger.warning("redis %s publisher unhealthy (%s): %s", self.label, event, error)
        self._report("publisher", healthy, event, error)

    def _set_subscriber(self, healthy: bool, event: str, error: Optional[str]) -> None:
        if healthy == self.subscriber_healthy or self.closed:
            return
        self.subscriber_healthy = healthy
        (logger.info if healthy else logger.warning)("redis %s subscriber %s (%s)%s", self.label,
                                                     "healthy" if healthy else "unhealthy", event,
                                                     ": %s" % error if error else "")
        self._report("subscriber", healthy, event, error)

    def _auth(self, ok: bool, error: Optional[str]) -> None:
        if ok == (not self.auth_failed):
            return
        self.auth_failed = not ok
        if not ok:
            logger.error("authentication failed for redis cluster %s: %s; check the password / username in "
                         "redis_config", self.label, error)
            self._report("publisher", False, "auth_failed", error)

    def _event(self, event: str, **details: Any) -> None:
        self.event_details = details
        self._report("cluster", self.publisher_healthy, event, None)

    def _report(self, conn_type: str, healthy: bool, event: str, error: Optional[str]) -> None:
        try:
            self._on_health_change(self, conn_type, healthy, event, error)
        except Exception:
            logger.exception("health hook failed")
        finally:
            self.event_details = {}


__all__ = ["ClusterNode", "MAX_REDIRECTS", "Shard"]
