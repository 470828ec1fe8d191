"""A Redis Cluster as one node of the bus: sharded pub/sub (SPUBLISH / SSUBSCRIBE), slot routing.

A :class:`ClusterNode` stands in :class:`~crossws_sync.bus.nodes.RedisNodeSet` for a whole Redis
Cluster (a ``redis+cluster://`` URL or a ``{"cluster": [...]}`` entry, see
:func:`crossws_sync.config.parse_cluster_entry`), with the interface of a
:class:`~crossws_sync.bus.node.RedisNode` (publish, publish_nowait, command, subscribe tickets,
unsubscribe, health, close...). Inside:

* the **topology** (:class:`~crossws_sync.bus.topology.ClusterTopology`): ``CLUSTER SLOTS`` of
  any reachable node (known primaries first, then their replicas, then the seeds), as a slot ->
  primary table. It is read at start, and again with a short backoff whenever a shard's
  connection is lost, a publish is redirected (``MOVED``) or a sharded channel is dropped by its
  shard (``sunsubscribe`` push after a slot migration);
* one **shard** per primary (:class:`~crossws_sync.bus.shards.Shard`): a pipelined publisher
  connection sending ``SPUBLISH``, and a sharded subscriber sending ``SSUBSCRIBE`` one slot per command;
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
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import gevent
from gevent.event import Event

import redis

from ..config import ClusterConfig, parse_cluster_entry
from ..errors import RedisUnavailableError
from ..io.supervisor import supervise
from ..wire.slots import Address, SlotRange, parse_redirect, topology_change
from .connection import RedisSettings, settings_from
from .node import NODE_COUNTS
from .placement import ChannelPlacement
from .settings import is_auth_error, make_client, require_monkey_patched
from .shards import Shard
from .subscriber import SubscribeTicket
from .topology import MAX_REDIRECTS, ClusterTopology, address_label

logger = logging.getLogger("crossws_sync.nodes")

_REFRESH_FIRST = 0.05
_REFRESH_MAX = 0.5
#: Shortest time between two topology reads (CLUSTER SLOTS on a fresh connection).
_REFRESH_GAP = 0.1


def _now() -> float:
    return time.monotonic()


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
        #: The slot table and the shard of each primary (commands routed by key, MOVED / ASK followed).
        self.topology = ClusterTopology(
            label=self.label, seeds=self.cluster.seeds, settings=self.settings, command_timeout=self.command_timeout,
            make_shard=self._make_shard, on_stale=self._mark_stale, on_slot_moved=self._slot_moved,
            closed=lambda: self.closed, stats=self.stats)
        self._shards = self.topology.shards
        self._placement = ChannelPlacement(
            owner=self.topology.owner, shard_at=self.topology.shard_at, shard=self._shards.get, stats=self.stats)
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
        return "cluster(%s)" % ",".join(address_label(seed) for seed in self.cluster.seeds)

    @property
    def eligible(self) -> bool:
        """Healthy for publishing (as for :class:`RedisNode`); after a topology change only once
        ``recovery_grace`` passed, so that every server has re-homed its channels."""
        return (self.publisher_healthy and self.subscriber_healthy and not self.retiring
                and _now() >= self._eligible_at)

    @property
    def shards(self) -> Dict[str, List[Tuple[int, int]]]:
        """``{"host:port": [(first slot, last slot), ...]}`` of the current primaries."""
        return self.topology.layout

    def owner_of(self, name: str) -> Optional[str]:
        """``host:port`` of the primary serving ``name``'s slot (``None``: unknown)."""
        return self.topology.owner_of(name)

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
        self.topology.publish_nowait(channel, raw, fallback, redirects)

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
        return self.topology.command_for_key(key, *args, timeout=wait)

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

    def _make_shard(self, address: Address, settings: RedisSettings) -> Shard:
        return Shard(address, settings, command_timeout=self.command_timeout, ping_interval=self.ping_interval,
                     ping_timeout=self.ping_timeout, force_ping=self.force_ping,
                     on_publisher_down=self._shard_publisher_down,
                     on_message=lambda channel, raw: self._on_message(self, channel, raw),
                     on_moved=self._channels_moved, on_refused=self._channels_refused,
                     on_state=self._shard_subscriber_state, on_change=self._subscriptions_changed,
                     closed=lambda: self.closed, stopped=lambda: self.closed or self.abandoned)

    def _slot_moved(self, slot: int) -> None:
        self._placement.place_slot(slot)
        self._update_subscriber_health("slot_moved")

    def _channels_moved(self, shard: Shard, channels: List[str], reason: str, error: Optional[str]) -> None:
        logger.info("redis shard %s no longer serves %d wanted channel(s) (%s); refreshing the topology",
                    shard.label, len(channels), reason)
        redirect = parse_redirect(error, shard.address[0]) if error else None
        self._placement.moved(shard.address, channels)  # released here; placed again by the refresh
        shard.subscriber.release(channels, unsubscribe=False)
        if redirect is not None:
            self.topology.follow(redirect)
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
            if (self._stale or not self.topology.owners) and _now() - last_refresh >= _REFRESH_GAP:
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
        return (not self.topology.owners or any(not s.publisher_up or not s.subscriber.connected for s in self._shards.values())
                or self._placement.homeless > 0)

    def _refresh(self) -> bool:
        """Read the topology from the first node that answers; apply it if it changed."""
        self.stats["topology_refreshes"] += 1
        ranges, errors = self.topology.read(
            on_error=lambda error: self._auth(False, error) if is_auth_error(error) else None)
        if ranges is not None:
            self._auth(True, None)
            self._stale = False
            self._apply(ranges)
            return True
        if not self.topology.owners and not self.closed:
            logger.warning("redis cluster %s: no node answered CLUSTER SLOTS (%s)", self.label, "; ".join(errors))
            self._set_publisher(False, "topology", "; ".join(errors) or "no node")
        return False

    def _apply(self, ranges: List[SlotRange]) -> None:
        if ranges == self.topology.ranges:
            return
        first = not self.topology.ranges
        old_owners = self.topology.update(ranges)  # a shard for every new primary
        primaries = {rng.primary for rng in ranges}
        self.stats["topology_changes"] += 0 if first else 1  # replicas included
        self._placement.place(sorted(self._placement.wanted))
        self._update_subscriber_health("topology")
        for shard in self.topology.drop_shards(keep=primaries):
            self._placement.forget_shard(shard.address, shard.subscriber.assigned)
            shard.close()
        if first:
            logger.info("redis cluster %s: %d shard(s)", self.label, len(primaries))
            self._event("cluster_topology", shards=sorted(address_label(p) for p in primaries))
            return
        change = topology_change(old_owners, self.topology.owners)
        if not change.changed:
            return  # replicas only
        # As for a recovered node: peers re-home their channels on their own refresh; give them
        # recovery_grace before the outage buffers flush through this node (see ``eligible``).
        self._eligible_at = _now() + self.recovery_grace
        for gone, successors in sorted(change.replaced.items()):
            new_primary = ", ".join(address_label(a) for a in successors) or "none"
            self.stats["failovers"] += 1
            logger.warning("redis cluster %s: primary %s replaced by %s", self.label, address_label(gone), new_primary)
            self._event("cluster_failover", shard=address_label(gone), new_primary=new_primary)
        if change.moved:
            logger.info("redis cluster %s: %d slot(s) changed primary", self.label, change.moved)
            self._event("cluster_slots_moved", slots=change.moved)

    def _ping_shards(self) -> None:
        latency = self.topology.ping_shards(self.ping_timeout, on_down=self._shard_publisher_down,
                                             on_up=lambda: self._update_publisher_health("ping"))
        if latency is not None:
            self.latency = latency

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
        healthy = bool(self.topology.owners) and any(s.publisher_up for s in self._shards.values())
        self._set_publisher(healthy, event, error)

    def _update_subscriber_health(self, event: str, error: Optional[str] = None) -> None:
        """Down when a shard's subscriber is disconnected or a wanted channel has no home (its
        slot moved, no owner known); up again once every wanted channel is confirmed on its
        owner. A new channel still waiting for its confirmation does not make it flap (as for
        :class:`RedisNode`)."""
        shards = list(self._shards.values())
        down = (not self.topology.owners or not shards or not all(s.subscriber.connected for s in shards)
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
