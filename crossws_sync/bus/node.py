"""One Redis node of the cross-server bus: publisher, subscriber, supervised listener, health.

A :class:`RedisNode` owns exactly two Redis connections and three greenlets:

* the **publisher** connection (:mod:`crossws_sync.bus.publisher`): whatever was submitted in one
  event-loop iteration (publishes, PINGs, PUBSUB NUMSUB) is written in one ``send()``, a
  *writer* greenlet takes over only when that would block, and a reader matches the replies;
* the **subscriber** connection (:mod:`crossws_sync.bus.subscriber`), read by a *listener*
  greenlet. The listener is supervised: any
  ``Exception`` is logged, the connection is dropped and, after a short backoff, a new one is
  opened and every wanted channel is subscribed again in one SUBSCRIBE. Unless
  ``force_ping`` is off it also PINGs on the subscriber connection and treats a missing pong
  after ``ping_timeout`` as a dead link;
* a *health* greenlet that PINGs the publisher every ``ping_interval`` with a real timeout of
  ``ping_timeout`` (also with a single node, unlike the original), probes a node that is down
  until it answers, and watches the listener for a stalled read.

With a *probe channel* the health greenlet also checks that the subscriber hears what the
publisher publishes (the liveness probe, :mod:`crossws_sync.bus.health`): a subscriber left on a
server that no longer gets the publishes is reported down with the event ``probe``.

A Sentinel entry (:mod:`crossws_sync.bus.sentinel`) has no fixed address: every connection the
node opens (and the history store's, through :meth:`RedisNode.open_connection`) asks the
sentinels for the primary and checks its ``ROLE``. Such a node's label is
``sentinel:<service name>``; its ``host`` is that label and its ``port`` the sentinel list.

Health is reported per connection type (``publisher`` / ``subscriber``) through the
``on_health_change`` hook, once per flip. A publisher that comes back after a failure becomes
*eligible* for publishing only after ``recovery_grace`` seconds and once this node's subscriber
is subscribed again, so that the other nodes of the cluster have re-subscribed too before
traffic is sent through it.

Both connections are the node's own (:mod:`crossws_sync.bus.connection`); redis-py only parses
``redis_config``. Connection settings are explicit: connect timeout, TCP keepalive, RESP2, no
client-side retries (failover is the bus's job), a command timeout on both connections. The subscriber never
blocks in a read waiting for traffic (its reads time out within a second), so its timeout only
bounds the connect handshake and a reply that stalls half-way; idle liveness comes from PINGs.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

import gevent
from gevent.event import Event

import redis

from ..io.supervisor import supervise
from ..config import SentinelConfig, is_sentinel_entry, sentinel_config
from ..errors import RedisUnavailableError
from .connection import RedisConnection, RedisSettings, settings_from
from .health import HealthCheck
from .publisher import Command, NoWaitCommand, Publisher
from .sentinel import SentinelPrimary
from .settings import (MONKEY_PATCH_HINT, RedisConfig, describe_config, is_auth_error, make_client,
                       require_monkey_patched)
from .subscriber import SubscribeTicket, Subscriber

logger = logging.getLogger("crossws_sync.nodes")

#: Per-node counters (:attr:`RedisNode.counts`): messages published through the node and
#: received from it, received ones that could not be decoded, and publishes that failed on it
#: and moved to another node (or failed).
NODE_COUNTS = ("published", "received", "decode_errors", "failovers")

#: ``on_message(node, channel, raw_bytes)``
MessageHook = Callable[["RedisNode", str, bytes], None]
#: ``on_health_change(node, conn_type, is_healthy, event, error)``
HealthHook = Callable[["RedisNode", str, bool, str, Optional[str]], None]
#: ``on_subscription_error(node, channel, event, error)``
SubscriptionErrorHook = Callable[["RedisNode", str, str, str], None]

_BACKOFF_FIRST = 0.05


def _now() -> float:
    return time.monotonic()


class RedisNode:
    """One Redis server as seen by one bus.

    Args:
        config: redis-py keyword dict or URL (see :func:`make_client`).
        server_name: the owning bus's server name (for logs only).
        on_message: called in the listener greenlet for every message on a wanted channel.
        on_health_change: called once per health flip of either connection.
        on_subscription_error: called when Redis refuses a SUBSCRIBE / UNSUBSCRIBE.
        ping_interval: seconds between PINGs.
        ping_timeout: a PING not answered within this many seconds marks the connection down.
        force_ping: PING periodically (else health comes from connection errors only).
        connect_timeout: TCP connect timeout.
        command_timeout: publisher socket timeout (default: ``max(ping_timeout, 1.0)``).
        recovery_grace: seconds a recovered publisher waits before it is eligible again.
        name_check_channel: after the first subscription, count its subscribers with
            ``PUBSUB NUMSUB``; more than one means another live node uses our name.
        on_name_conflict: ``(node, subscriber_count)`` when that check finds a duplicate.
        probe_channel: the liveness probe's channel (private to this node; ``None``: no probe).

    Raises:
        MonkeyPatchError: gevent monkey-patching is missing.
        ConfigError: invalid ``config``.
    """

    def __init__(self, config: RedisConfig, *, server_name: str, on_message: MessageHook,
                 on_health_change: HealthHook, on_subscription_error: SubscriptionErrorHook,
                 ping_interval: float = 5.0, ping_timeout: float = 2.0, force_ping: bool = True,
                 connect_timeout: float = 2.0, command_timeout: Optional[float] = None,
                 recovery_grace: float = 1.0, name_check_channel: Optional[str] = None,
                 on_name_conflict: Optional[Callable[["RedisNode", int], None]] = None,
                 probe_channel: Optional[str] = None) -> None:
        require_monkey_patched()
        self.config = config
        self.server_name = server_name
        self._on_message = on_message
        self._on_health_change = on_health_change
        self._on_subscription_error = on_subscription_error
        self.ping_interval = float(ping_interval)
        self.ping_timeout = float(ping_timeout)
        self.force_ping = bool(force_ping)
        self.recovery_grace = float(recovery_grace)
        self._command_timeout = float(command_timeout if command_timeout is not None else max(ping_timeout, 1.0))
        #: The Sentinel-managed primary (``None``: a fixed address).
        self.sentinel: Optional[SentinelPrimary] = None
        sentinel: Optional[SentinelConfig] = None
        primary: RedisConfig = config
        if is_sentinel_entry(config):
            sentinel = sentinel_config(config)
            self.sentinel = SentinelPrimary(sentinel, connect_timeout=connect_timeout)
            primary = sentinel.primary
        # redis-py's public API parses the entry (keywords and URLs); the connections are ours.
        pool = make_client(primary, connect_timeout=connect_timeout,
                           command_timeout=self._command_timeout).connection_pool
        kwargs = pool.connection_kwargs
        #: How the publisher connects; the subscriber's timeout is always the command timeout (its
        #: reads have their own short timeouts: it bounds the handshake, writes and a stalled reply).
        self.settings: RedisSettings = settings_from(pool.connection_class, kwargs)
        self._sub_settings = self.settings.replace_timeout(self._command_timeout)
        self.host = kwargs.get("host", kwargs.get("path", "Unknown Host"))
        self.port = kwargs.get("port", "Unknown Port")
        if sentinel is not None:
            self.host, self.port = sentinel.label, sentinel.sentinel_list
        self.db = kwargs.get("db", 0)
        #: The liveness probe's channel (``None``: no probe); see :mod:`crossws_sync.bus.health`.
        self.probe_channel = probe_channel

        # Health
        self.publisher_healthy = False
        self.subscriber_healthy = False
        self._grace_on_heal = False
        self._never_up_logged = False
        #: Whether Redis refuses this node's credentials now (set on the first refusal, cleared when
        #: a connection succeeds again); logged and reported once per change.
        self.auth_failed = False
        self._eligible_at = 0.0
        self._sub_started = Event()

        # Publisher: pipelined commands on the publisher connection (see publisher.py).
        self._publisher = Publisher(self._open_publisher, label=self.label,
                                    on_down=lambda event, error: self._set_publisher(False, event, error),
                                    command_timeout=self._command_timeout)

        # Subscriber: the wanted channels and the listener (see subscriber.py).
        self._subscriber = Subscriber(
            self._open_subscriber, label=self.label,
            on_message=self._deliver,
            on_ready=self._subscriber_ready,
            on_down=lambda event, error: self._set_subscriber(False, event, error),
            on_attempt=self._sub_started.set,
            on_subscription_error=lambda channel, event, error: self._on_subscription_error(self, channel, event, error),
            is_healthy=lambda: self.subscriber_healthy, closed=lambda: self._closed or self._abandoned,
            ping_interval=self.ping_interval, ping_timeout=self.ping_timeout, force_ping=self.force_ping)

        # Health check: publisher PINGs, stalled reads, the name check, the probe (see health.py).
        self._health = HealthCheck(
            label=self.label, command=self.command, subscriber=self._subscriber,
            listener=lambda: self._greenlets[1] if len(self._greenlets) > 1 else None,
            publisher_up=lambda: self.publisher_healthy, subscriber_up=lambda: self.subscriber_healthy,
            set_publisher=self._set_publisher, set_subscriber=self._set_subscriber,
            stopped=lambda: self._closed or self._abandoned, ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout, force_ping=self.force_ping, name_check_channel=name_check_channel,
            on_name_conflict=(lambda count: on_name_conflict(self, count)) if on_name_conflict is not None else None,
            probe_channel=probe_channel)
        self._closed = False
        self._abandoned = False
        #: Set by the bus while the node is being removed: still listening, no longer publishing.
        self.retiring = False
        #: what went through this node (read by the metrics collector): :data:`NODE_COUNTS`
        self.counts: Dict[str, int] = dict.fromkeys(NODE_COUNTS, 0)
        self._greenlets: List[gevent.Greenlet] = []

    def __repr__(self) -> str:
        return "RedisNode(%s, publisher=%s, subscriber=%s)" % (
            self.label, "up" if self.publisher_healthy else "down", "up" if self.subscriber_healthy else "down")

    @property
    def label(self) -> str:
        """``host:port``, or ``sentinel:<service name>`` (never the password)."""
        if self.sentinel is not None:
            return self.sentinel.label
        return "%s:%s" % (self.host, self.port)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def latency(self) -> float:
        """Round trip of the last publisher PING in seconds (0.0 until measured; ``fastest`` uses it)."""
        return self._health.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._health.latency = value

    @property
    def probe_latency(self) -> float:
        """Round trip of the last liveness probe (publisher to own subscriber) in seconds."""
        return self._health.probe_latency

    @property
    def probe_misses(self) -> int:
        """Liveness probes that did not come back in time."""
        return self._health.probe_misses

    @property
    def eligible(self) -> bool:
        """Healthy for publishing: publisher up, own subscriber up and past the recovery grace."""
        return (self.publisher_healthy and self.subscriber_healthy and not self.retiring
                and _now() >= self._eligible_at)

    # Lifecycle ----------------------------------------------------------------------------

    def start(self, channels: Iterable[str] = (), *, joining: bool = False) -> None:
        """Start the greenlets; ``channels`` are subscribed on the first connection.

        Args:
            channels: channels to subscribe from the start.
            joining: the node is added to a running cluster: like a recovered node, it becomes
                eligible for publishing only ``recovery_grace`` seconds after it is healthy,
                so that the other servers can subscribe to it first.
        """
        self._subscriber.want(channels)
        if self.probe_channel is not None:
            self._subscriber.want([self.probe_channel])
        self._grace_on_heal = joining
        self.retiring = False
        self._greenlets = [
            gevent.spawn(supervise, loop, "%s of redis %s" % (name, self.label), logger,
                         stopped=lambda: self._closed, backoff=_BACKOFF_FIRST)
            for loop, name in ((self._publisher.writer_loop, "publisher writer"), (self._subscriber.run, "subscriber listener"),
                               (self._health.run, "health check"))
        ]

    def wait_started(self, timeout: float) -> bool:
        """Wait until both connections made their first attempt (success or failure)."""
        deadline = _now() + timeout
        return (self._health.pinged.wait(max(0.0, deadline - _now())) is True
                and self._sub_started.wait(max(0.0, deadline - _now())) is True)

    def abandon(self) -> None:
        """Mark the node closed for the loops inherited by a forked child (see ``close``)."""
        self._abandoned = True

    def close(self) -> None:
        """Stop every greenlet and close both connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._health.wake()
        current = gevent.getcurrent()
        gevent.killall([g for g in self._greenlets if g is not current], block=True, timeout=5)
        self._subscriber.disconnect()
        self._publisher.close()
        self.publisher_healthy = False
        self.subscriber_healthy = False
        self._subscriber.notify()

    # Publisher ----------------------------------------------------------------------------

    def command(self, *args: Any, timeout: Optional[float] = None) -> Any:
        """Run one command on the publisher connection (pipelined with concurrent ones).

        Args:
            args: the command and its arguments (``"PUBLISH", channel, data``).
            timeout: seconds to wait (default: twice the command timeout).

        Returns:
            Redis's reply.

        Raises:
            RedisUnavailableError: closed, not answered in time, or the connection failed.
            redis.ResponseError: Redis answered with an error.
        """
        if self._closed:
            raise RedisUnavailableError("redis node %s closed" % self.label)
        command = Command(args)
        self._publisher.submit(command)
        wait = timeout if timeout is not None else 2 * self._command_timeout + 0.5
        try:
            return command.result.get(timeout=wait)
        except gevent.Timeout:
            command.cancelled = True
            raise RedisUnavailableError("redis node %s did not answer %s within %.1fs"
                                        % (self.label, args[0], wait)) from None

    def publish(self, channel: str, raw: bytes) -> int:
        """PUBLISH ``raw`` on ``channel``; return how many subscribers Redis delivered it to.

        Raises:
            RedisUnavailableError: the node could not take it (the node marks itself down).
        """
        try:
            return int(self.command("PUBLISH", channel, raw))
        except RedisUnavailableError as exc:
            self._set_publisher(False, "error", str(exc))
            raise
        except redis.RedisError as exc:
            raise RedisUnavailableError("redis node %s refused PUBLISH: %s" % (self.label, exc)) from None

    def publish_nowait(self, channel: str, raw: bytes, fallback: Callable[[BaseException], None]) -> None:
        """Queue a PUBLISH without waiting for Redis's reply: a sender's consecutive publishes
        share one pipelined write. If the write fails, ``fallback(error)`` runs (in the writer
        greenlet; it must not block) so the caller can try another node.

        Raises:
            RedisUnavailableError: the node is closed.
        """
        if self._closed:
            raise RedisUnavailableError("redis node %s closed" % self.label)
        self._publisher.submit(NoWaitCommand(("PUBLISH", channel, raw), fallback))

    def open_connection(self, settings: RedisSettings) -> RedisConnection:
        """Open a connection with ``settings``: as they say, or, for a Sentinel entry, to the
        primary the sentinels name now (address replaced, ``ROLE`` checked). May block.

        Raises:
            redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError: as
                :meth:`RedisConnection.open`; for Sentinel also when no sentinel answers or
                the address they give is not a primary.
        """
        if self.sentinel is not None:
            return self.sentinel.open(settings)
        return RedisConnection.open(settings)

    def _open_publisher(self) -> RedisConnection:
        return self.open_connection(self.settings)

    # Subscriber -------------------------------------------------------------------------

    @property
    def wanted_channels(self) -> Set[str]:
        """A copy of the channels this node keeps subscribed (replayed on every reconnect);
        the probe channel is not listed."""
        channels = self._subscriber.wanted_channels
        channels.discard(self.probe_channel or "")
        return channels

    @property
    def subscriber_latency(self) -> float:
        """Round trip of the last subscriber PING in seconds."""
        return self._subscriber.latency

    def request_subscribe(self, channels: Iterable[str]) -> SubscribeTicket:
        """Add ``channels`` to the wanted set and send SUBSCRIBE if connected (non-blocking)."""
        return self._subscriber.request_subscribe(channels)

    def wait_ticket(self, ticket: SubscribeTicket, channels: Iterable[str], deadline: float) -> Dict[str, str]:
        """Wait until each channel is subscribed on this node (see :meth:`Subscriber.wait_ticket`)."""
        return self._subscriber.wait_ticket(ticket, channels, deadline)

    def is_subscribed(self, channel: str) -> bool:
        """Whether ``channel`` is confirmed on the current subscriber connection."""
        return self._subscriber.is_subscribed(channel)

    def unsubscribe(self, channels: Iterable[str]) -> None:
        """Remove ``channels`` from the wanted set and send UNSUBSCRIBE if connected."""
        self._subscriber.unsubscribe(channels)

    def _open_subscriber(self) -> RedisConnection:
        return self.open_connection(self._sub_settings)

    def _deliver(self, channel: str, raw: bytes) -> None:
        if channel == self.probe_channel:
            self._health.probe_received(raw)
            return
        self._on_message(self, channel, raw)

    def _subscriber_ready(self) -> None:
        self._set_subscriber(True, "ready", None)
        self._sub_started.set()
        self._health.subscriber_ready()

    # Health -------------------------------------------------------------------------------

    def _set_publisher(self, healthy: bool, event: str, error: Optional[str]) -> None:
        self._check_auth("publisher", healthy, error)
        if healthy == self.publisher_healthy or self._closed:
            if not healthy and not self._health.publisher_seen and not self._closed and not self._never_up_logged:
                # Never connected: no flip to report, but say why once (wrong password, TLS, ...).
                self._never_up_logged = True
                logger.warning("redis %s publisher cannot connect (%s): %s", self.label, event, error)
            return
        self.publisher_healthy = healthy
        if healthy:
            if self._grace_on_heal:
                self._eligible_at = _now() + self.recovery_grace
            self._grace_on_heal = True
            logger.info("redis %s publisher healthy (%s)", self.label, event)
        else:
            logger.warning("redis %s publisher unhealthy (%s): %s", self.label, event, error)
            self._health.wake()
        self._report("publisher", healthy, event, error)

    def _set_subscriber(self, healthy: bool, event: str, error: Optional[str]) -> None:
        self._check_auth("subscriber", healthy, error)
        if healthy == self.subscriber_healthy or self._closed:
            return
        self.subscriber_healthy = healthy
        if healthy:
            logger.info("redis %s subscriber healthy (%s)", self.label, event)
        else:
            logger.warning("redis %s subscriber unhealthy (%s): %s", self.label, event, error)
            self._health.wake()  # a lost subscriber usually means a lost server: check the publisher now
        self._report("subscriber", healthy, event, error)

    def _check_auth(self, conn_type: str, healthy: bool, error: Optional[str]) -> None:
        # A connection that breaks is reported once, when it flips; a refused password shows only
        # in the reconnect attempts after that, which flip nothing: say it once, distinctly.
        if self._closed:
            return
        if healthy:
            if self.auth_failed:
                self.auth_failed = False
                logger.warning("redis %s accepts this node's credentials again (%s)", self.label, conn_type)
            return
        if self.auth_failed or not is_auth_error(error):
            return
        self.auth_failed = True
        logger.error("authentication failed for redis node %s (%s): %s; check the password / username "
                     "in redis_config (did Redis restart with another password?)", self.label, conn_type, error)
        self._report(conn_type, False, "auth_failed", error)

    def _report(self, conn_type: str, healthy: bool, event: str, error: Optional[str]) -> None:
        try:
            self._on_health_change(self, conn_type, healthy, event, error)
        except Exception:
            logger.exception("health hook failed")


__all__ = ["MONKEY_PATCH_HINT", "RedisNode", "SubscribeTicket", "describe_config", "make_client",
           "require_monkey_patched"]
