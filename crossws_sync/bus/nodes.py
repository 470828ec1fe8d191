"""The Redis nodes of one bus: where to publish, what to subscribe, which nodes are up.

A :class:`RedisNodeSet` owns the bus's :class:`~crossws_sync.bus.node.RedisNode` objects:

* **publishing** picks a node with the selection strategy (``random``, ``round-robin``,
  ``fastest``) among the eligible ones and fails over to the others, blocking
  (:meth:`publish`) or pipelined (:meth:`publish_nowait`, whose failover runs when a node's
  write fails);
* **subscribing** keeps one set of wanted channels, subscribed on every node (a node that
  reconnects or joins subscribes the whole set);
* **membership**: nodes added and removed at run time (a removed node stops publishing at
  once and keeps listening while it drains), health counts and the user's health and
  subscription-error hooks.

It knows nothing of envelopes or events: the bus encodes, the set carries bytes.
"""
from __future__ import annotations

import logging
import random
import secrets
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Sequence, Tuple, Union

import gevent

from ..config import SELECTION_STRATEGIES, is_cluster_entry
from ..errors import ConfigError, RedisUnavailableError
from .node import MessageHook, RedisNode
from .settings import RedisConfig, describe_config, require_monkey_patched
from ..results import Result

logger = logging.getLogger("crossws_sync.bus")

#: The publish strategies (one tuple, defined in :mod:`crossws_sync.config`).
STRATEGIES = SELECTION_STRATEGIES
UNAVAILABLE_MESSAGE = "No healthy Redis node available"


class RedisNodeSet:
    """Every Redis node of one bus.

    Args:
        server_name: the bus's server name (for hooks and logs).
        on_message: ``(node, channel, raw)`` for every message, in each node's listener greenlet.
        stats: the bus's counters; ``published``, ``publish_failovers`` and
            ``publish_failures`` are counted here.
        selection_strategy: one of :data:`STRATEGIES`.
        name_check_channel: the bus's own node channel (a second subscriber means a duplicate
            server name).
        on_name_conflict: ``(node, subscribers)`` when that check finds a duplicate.
        on_health_change: the user's ``(is_healthy, info)`` hook (``None``: none).
        on_subscription_error: the user's ``(info)`` hook (``None``: none).
        ping_interval, ping_timeout, force_ping, connect_timeout: per-node health settings.
        probe_prefix: with ``force_ping``, each node runs a liveness probe on the channel
            ``<probe_prefix><random>`` (see :class:`~crossws_sync.bus.node.RedisNode`); ``None``: no probe.
    """

    def __init__(self, *, server_name: str, on_message: MessageHook, stats: Dict[str, int],
                 selection_strategy: str, name_check_channel: str,
                 on_name_conflict: Callable[[RedisNode, int], None],
                 on_health_change: Optional[Callable[[bool, Result], Any]],
                 on_subscription_error: Optional[Callable[[Result], Any]],
                 ping_interval: float, ping_timeout: float, force_ping: bool, connect_timeout: float,
                 probe_prefix: Optional[str] = None) -> None:
        self._server_name = server_name
        self._on_message = on_message
        self.stats = stats
        self.selection_strategy = selection_strategy
        self._name_check_channel = name_check_channel
        self._on_name_conflict = on_name_conflict
        self._on_health = on_health_change
        self._on_subscription_error = on_subscription_error
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._force_ping = force_ping
        self._connect_timeout = connect_timeout
        self._probe_prefix = probe_prefix if force_ping else None
        #: Channels subscribed on every node.
        self.channels: Set[str] = set()
        self._nodes: List[RedisNode] = []
        self._draining: Dict[RedisNode, gevent.Greenlet] = {}
        self._round_robin = 0

    # Membership ---------------------------------------------------------------------------

    @property
    def nodes(self) -> List[RedisNode]:
        """A copy of the list of nodes, in configuration order."""
        return list(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def start(self, configs: Sequence[RedisConfig], channels: Iterable[str]) -> None:
        """Create the configured nodes and connect them, subscribing ``channels``.

        Blocks until every node made its first connection attempt (about the connect timeout
        at most); a node that is down keeps retrying in the background.
        """
        self.channels.update(channels)
        if configs:
            require_monkey_patched()
        for config in configs:
            self._nodes.append(self._make_node(config))
        for node in self._nodes:
            node.start(self.channels)
        self._wait_started(self._nodes)

    def add(self, config: RedisConfig) -> None:
        """Add a node: connect, subscribe every channel, then publish through it.

        Raises:
            ConfigError: that node (host, port, db) is already configured.
        """
        if is_cluster_entry(config):
            raise ConfigError("a Redis Cluster cannot be added to running nodes: it must be the only redis_config entry")
        identity = describe_config(config)
        if any((node.host, node.port, node.db) == identity for node in self._nodes):
            raise ConfigError("redis node %s:%s db %s is already configured" % identity)
        require_monkey_patched()
        node = self._make_node(config)
        node.start(self.channels, joining=True)
        self._nodes.append(node)
        self._wait_started([node])
        logger.info("redis node %s added", node.label)

    def remove(self, config_or_index: Union[RedisConfig, int], *, drain: float = 1.0) -> bool:
        """Stop publishing through a node at once and listening on it after ``drain`` seconds.

        Returns:
            Whether a node was removed.
        """
        if isinstance(config_or_index, int) and not isinstance(config_or_index, bool):
            if not -len(self._nodes) <= config_or_index < len(self._nodes):
                return False
            node = self._nodes[config_or_index]
        else:
            if isinstance(config_or_index, bool):
                return False
            identity = describe_config(config_or_index)
            matches = [n for n in self._nodes if (n.host, n.port, n.db) == identity]
            if not matches:
                return False
            node = matches[0]
        self._nodes.remove(node)
        node.retiring = True
        if drain > 0:
            self._draining[node] = gevent.spawn_later(drain, self._close_drained, node)
        else:
            node.close()
        logger.info("redis node %s removed", node.label)
        return True

    def close(self) -> None:
        """Close every node, draining ones included."""
        nodes, self._nodes = self._nodes, []
        draining, self._draining = self._draining, {}
        gevent.killall(list(draining.values()), block=True, timeout=5)
        for node in nodes + list(draining):
            node.close()

    # Health -------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether at least one node has a healthy publisher."""
        return any(node.publisher_healthy for node in self._nodes)

    @property
    def settled(self) -> bool:
        """Whether at least one node is fully usable (both connections up, past the grace)."""
        return any(node.eligible for node in self._nodes)

    def healthy_count(self, conn_type: str) -> int:
        """Nodes whose ``"publisher"`` or ``"subscriber"`` connection is healthy.

        Raises:
            TypeError: another ``conn_type``.
        """
        if conn_type == "publisher":
            return sum(1 for node in self._nodes if node.publisher_healthy)
        if conn_type == "subscriber":
            return sum(1 for node in self._nodes if node.subscriber_healthy)
        raise TypeError("Invalid type. Must be 'publisher' or 'subscriber'.")

    def wait_healthy(self, timeout: float) -> bool:
        """Block until every node is healthy on both connections (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._nodes and all(n.publisher_healthy and n.subscriber_healthy for n in self._nodes):
                return True
            gevent.sleep(0.02)
        return False

    # Publishing ---------------------------------------------------------------------------

    def publish(self, channel: str, raw: bytes) -> None:
        """PUBLISH on one node, failing over; returns once a node acknowledged it.

        Raises:
            RedisUnavailableError: no node took it.
        """
        errors = []
        for attempt, node in enumerate(self._candidates()):
            if attempt:
                self.stats["publish_failovers"] += 1
            try:
                node.publish(channel, raw)
            except RedisUnavailableError as exc:
                node.counts["failovers"] += 1
                errors.append(str(exc))
                continue
            self.stats["published"] += 1
            node.counts["published"] += 1
            return
        self.stats["publish_failures"] += 1
        detail = ("; ".join(errors)) if errors else "no node is healthy"
        raise RedisUnavailableError("%s (%s)" % (UNAVAILABLE_MESSAGE, detail))

    def publish_nowait(self, channel: str, raw: bytes, on_lost: Optional[Callable[[BaseException], None]] = None,
                       tried: Tuple[RedisNode, ...] = ()) -> None:
        """Queue a PUBLISH on one node (pipelined); if its write fails, the next node is tried
        from that node's I/O greenlet, and ``on_lost(error)`` runs when none is left.

        Raises:
            RedisUnavailableError: no node is healthy now.
        """
        for node in self._candidates():
            if node in tried:
                continue

            def retry(error: BaseException, node: RedisNode = node) -> None:
                self.stats["publish_failovers"] += 1
                node.counts["failovers"] += 1
                try:
                    self.publish_nowait(channel, raw, on_lost, tried + (node,))
                except RedisUnavailableError:
                    self.stats["publish_failures"] += 1
                    if on_lost is not None:
                        on_lost(error)
                    else:
                        logger.warning("publish on %s lost: no other healthy Redis node (%s)", channel, error)

            try:
                node.publish_nowait(channel, raw, retry)
            except RedisUnavailableError:
                tried = tried + (node,)
                continue
            self.stats["published"] += 1
            node.counts["published"] += 1
            return
        raise RedisUnavailableError("%s (no node is healthy)" % UNAVAILABLE_MESSAGE)

    def _candidates(self) -> List[RedisNode]:
        """Nodes to try for one publish: the strategy's choice first, then the other healthy ones."""
        usable = [node for node in self._nodes if node.eligible]
        if not usable:
            usable = [node for node in self._nodes if node.publisher_healthy]
        if len(usable) <= 1:
            return usable
        if self.selection_strategy == "round-robin":
            index = self._round_robin % len(usable)
            self._round_robin = index + 1
        elif self.selection_strategy == "fastest":
            best = min(node.latency for node in usable)
            index = max(i for i, node in enumerate(usable) if node.latency == best)
        else:
            index = random.randrange(len(usable))
        return usable[index:] + usable[:index]

    # Subscribing --------------------------------------------------------------------------

    def subscribe(self, channel: str, timeout: float) -> bool:
        """Subscribe ``channel`` on every node; whether every healthy node confirmed in time."""
        self.channels.add(channel)
        nodes = list(self._nodes)
        if nodes and all(node.is_subscribed(channel) for node in nodes):
            return True  # already confirmed everywhere: no round trip
        tickets = [(node, node.request_subscribe([channel])) for node in nodes]
        deadline = time.monotonic() + timeout
        confirmed = True
        for node, ticket in tickets:
            status = node.wait_ticket(ticket, [channel], deadline)[channel]
            if status in ("ok", "down"):
                continue
            confirmed = False
            if status == "timeout":
                self._on_node_subscription_error(node, channel, "subscribe", "timed out")
        return confirmed

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe ``channel`` on every node."""
        self.unsubscribe_many([channel])

    def unsubscribe_many(self, channels: List[str]) -> None:
        """Unsubscribe ``channels`` on every node (one command per node, in chunks)."""
        self.channels.difference_update(channels)
        for node in list(self._nodes):
            node.unsubscribe(channels)

    # Internals ----------------------------------------------------------------------------

    def _make_node(self, config: RedisConfig) -> RedisNode:
        if is_cluster_entry(config):  # a whole Redis Cluster, sharded pub/sub (see .cluster)
            from .cluster import ClusterNode
            node: Any = ClusterNode(
                config, server_name=self._server_name, on_message=self._on_message,
                on_health_change=self._on_node_health, on_subscription_error=self._on_node_subscription_error,
                ping_interval=self._ping_interval, ping_timeout=self._ping_timeout, force_ping=self._force_ping,
                connect_timeout=self._connect_timeout, name_check_channel=self._name_check_channel,
                on_name_conflict=self._on_name_conflict)
            return node  # type: ignore[no-any-return]
        return RedisNode(config, server_name=self._server_name, on_message=self._on_message,
                         on_health_change=self._on_node_health, on_subscription_error=self._on_node_subscription_error,
                         ping_interval=self._ping_interval, ping_timeout=self._ping_timeout,
                         force_ping=self._force_ping, connect_timeout=self._connect_timeout,
                         name_check_channel=self._name_check_channel, on_name_conflict=self._on_name_conflict,
                         probe_channel=(self._probe_prefix + secrets.token_hex(4)) if self._probe_prefix else None)

    def _wait_started(self, nodes: List[RedisNode]) -> None:
        deadline = time.monotonic() + self._connect_timeout + self._ping_timeout + 1.0
        for node in nodes:
            if not node.wait_started(max(0.0, deadline - time.monotonic())):
                logger.warning("redis node %s not reachable yet; retrying in the background", node.label)

    def _close_drained(self, node: RedisNode) -> None:
        self._draining.pop(node, None)
        node.close()

    def _on_node_health(self, node: RedisNode, conn_type: str, healthy: bool, event: str, error: Optional[str]) -> None:
        hook = self._on_health
        if hook is None:
            return
        info = Result(
            host=node.host, port=node.port, server_name=self._server_name, event=event, is_healthy=healthy,
            error=error, healthy_subscriber_count=self.healthy_count("subscriber"),
            healthy_publisher_count=self.healthy_count("publisher"),
            total_node_count=len(self._nodes), type=conn_type)
        if node.auth_failed and not healthy:
            info["reason"] = "auth"  # ours, only then: the original's info keeps its shape
        details = getattr(node, "event_details", None)
        if details:  # a Redis Cluster's events: shard, new_primary, slots (see .cluster)
            info.update(details)
        try:
            hook(healthy, info)
        except Exception:
            logger.exception("on_redis_health_change hook raised")

    def _on_node_subscription_error(self, node: RedisNode, channel: str, event: str, error: str) -> None:
        hook = self._on_subscription_error
        if hook is None:
            return
        info = Result(host=node.host, port=node.port, server_name=self._server_name, channel=channel,
                      event=event, error=error)
        try:
            hook(info)
        except Exception:
            logger.exception("on_redis_subscription_error hook raised")


__all__ = ["RedisNodeSet", "STRATEGIES", "UNAVAILABLE_MESSAGE"]
