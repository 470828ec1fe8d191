"""The cross-server bus: events, RPC callbacks and promises between servers over Redis pub/sub.

Wire-compatible with the original Node.js library: the same channels
(``<bridge_prefix>server_bridge``, ``<ws_prefix>...``, custom names), the same envelopes and
the same JSON / MessagePack bytes, so original nodes and ours form one cluster.

Topology (:mod:`.nodes`): every bus subscribes every wanted channel on every
Redis node (one subscriber connection per node) and publishes each message on exactly one
healthy node, chosen by the strategy (``random``, ``round-robin``, ``fastest``); when that
node fails the same bytes are published on the next healthy node. Each message therefore
reaches every subscribed bus once. :class:`CrossServerBus` is the public facade on top; its
collaborators each own one concern: :mod:`.channels` (which channels are wanted, and why),
:mod:`.outbox` (encode-once publishing, sequence numbers), :mod:`.receiver` (dropping our own
echoes, decoding, routing what arrives by channel) and :mod:`.rpc` (the bridge channel's
protocol: requests, replies, pending calls, listeners). Options are checked by
:mod:`crossws_sync.config`.

Ours on top of the original (all additive on the wire):

* each bus also subscribes ``<bridge_prefix>node:<server_name>``; its requests carry
  ``replyTo`` so that replies from our nodes go to the requester only (original nodes still
  reply on the bridge channel, and our nodes reply to original requesters there);
* callback ids are unique across the cluster, cancelling one stops its timer, a publish that
  no Redis node takes fails the call at once (``error_code='REDIS_UNAVAILABLE'``);
* a server name that is already live in the cluster is detected and reported;
* ``remove_redis_instance`` and a ``close`` that stops every greenlet and connection.

Listeners, callbacks and the custom channel handler run on reusable worker greenlets
(:mod:`crossws_sync.dispatch`), so a listener may block (even wait for another RPC) without
stopping the bus. The local delivery of an event whose targets include this server runs
synchronously inside the emit call, as in the original.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import gevent
from gevent.event import AsyncResult

from ..config import check_bus_options, positive_number_or_default
from ..core.histogram import Histogram
from ..core.listeners import _SENTINEL
from ..errors import ConfigError
from ..io.dispatch import Dispatcher
from ..results import Result
from ..wire import envelope as env
from ..wire.codec import EnvelopeCodec, codec_from_options
from .calls import PendingCalls, ResultCallback
from .channels import Subscriptions
from .node import RedisNode
from .nodes import STRATEGIES, RedisNodeSet
from .settings import RedisConfig
from .outbox import Outbox
from .receiver import Receiver
from .rpc import DEFAULT_TIMEOUT, BridgeRpc, Listener

logger = logging.getLogger("crossws_sync.bus")

#: The counters of :attr:`CrossServerBus.stats`.
STAT_KEYS = ("published", "publish_failovers", "publish_failures", "received", "decode_errors", "self_echoes",
             "requests", "replies", "late_replies", "dropped", "foreign_codec", "messages_missed", "messages_late")


class CrossServerBus:
    """Cross-server events, RPC and custom channels over one or more Redis nodes.

    Args:
        server_name: this server's name, unique in the cluster (sent in every envelope).
        redis_config: Redis nodes; each a dict of redis-py options (``host``, ``port``,
            ``password``, ``db``, ``username``, ``ssl``...) or a ``redis://`` URL.
        bridge_prefix: prefix of the bridge channel (``csbp:`` -> ``csbp:server_bridge``).
        ws_prefix: prefix of the WebSocket-routing channels (``ws:``).
        redis_codec: ``"msgpack"`` (default, what the original sends by default) or ``"json"``.
        redis_compress_threshold: zstd-compress bodies above this many bytes (ours only;
            ``None``: never). Must be ``None`` when original Node nodes are in the cluster.
        enable_redis_data_compression: the original's option; when given it wins: ``True`` =
            MessagePack, ``False`` = JSON, both without zstd.
        redis_force_ping: PING every node periodically (also with a single node).
        redis_ping_interval: seconds between PINGs.
        redis_ping_timeout: seconds a PING may take before its connection counts as down.
        selection_strategy: ``"random"``, ``"round-robin"`` or ``"fastest"``.
        on_redis_health_change: ``(is_healthy, info)`` on every health flip of a connection;
            ``info`` has ``host, port, server_name, event, is_healthy, error,
            healthy_subscriber_count, healthy_publisher_count, total_node_count, type``, plus
            ``reason="auth"`` while Redis refuses the node's credentials; the hook is also called once (``event="auth_failed"``) when a node that is already down
            starts refusing them, e.g. after Redis restarted with another password.
        on_redis_subscription_error: ``(info)`` when a SUBSCRIBE / UNSUBSCRIBE fails; ``info``
            has ``host, port, server_name, channel, event, error``.
        custom_channels: extra channels subscribed from the start, for the custom handler.
        initial_channels: extra channels the WebSocket layer wants from the start.
        ws_message_handler: ``(channel, envelope)`` for messages on ``ws_prefix`` channels, called
            in order in the Redis listener greenlet (it must not block).
        signing_key: shared secret; when set every message is HMAC-signed and unsigned ones are
            dropped (our nodes only).
        max_decompressed_size: largest accepted message in bytes, plain or once decompressed.
        on_server_name_conflict: ``(info)`` when another live node uses this server name;
            ``info`` has ``server_name, host, port, subscribers``.
        connect_timeout: TCP connect timeout to Redis, in seconds.
        dispatch_concurrency: worker greenlets that may run (or block in) listeners / callbacks
            at once; also the queue length at which the Redis listener waits for room.

    Raises:
        ConfigError: an invalid option.
        MonkeyPatchError: Redis nodes configured but gevent monkey-patching missing.
    """

    def __init__(self, *, server_name: str, redis_config: Union[Sequence[RedisConfig], RedisConfig],
                 bridge_prefix: str = "csbp:", ws_prefix: str = "ws:",
                 redis_codec: str = "msgpack", redis_compress_threshold: Optional[int] = None,
                 enable_redis_data_compression: Optional[bool] = None,
                 redis_force_ping: bool = True, redis_ping_interval: float = 5.0, redis_ping_timeout: float = 2.0,
                 selection_strategy: str = "random",
                 on_redis_health_change: Optional[Callable[[bool, Result], Any]] = None,
                 on_redis_subscription_error: Optional[Callable[[Result], Any]] = None,
                 custom_channels: Union[str, Sequence[str], None] = None,
                 initial_channels: Iterable[str] = (),
                 ws_message_handler: Optional[Callable[[str, Any], Any]] = None,
                 signing_key: Optional[bytes] = None,
                 max_decompressed_size: int = 16 << 20,
                 on_server_name_conflict: Optional[Callable[[Result], Any]] = None,
                 connect_timeout: float = 2.0,
                 dispatch_concurrency: int = 1000) -> None:
        options = check_bus_options(
            server_name=server_name, bridge_prefix=bridge_prefix, ws_prefix=ws_prefix,
            selection_strategy=selection_strategy,
            seconds={"redis_ping_interval": redis_ping_interval, "redis_ping_timeout": redis_ping_timeout,
                     "connect_timeout": connect_timeout},
            hooks={"on_redis_health_change": on_redis_health_change,
                   "on_redis_subscription_error": on_redis_subscription_error,
                   "ws_message_handler": ws_message_handler, "on_server_name_conflict": on_server_name_conflict},
            redis_config=redis_config, custom_channels=custom_channels, initial_channels=initial_channels)
        self._server_name = server_name
        self.bridge_prefix = bridge_prefix
        self.ws_prefix = ws_prefix
        self.bridge_channel = env.bridge_channel(bridge_prefix)
        self.node_channel = env.node_channel(bridge_prefix, server_name)
        self._codec: EnvelopeCodec = codec_from_options(
            redis_codec=redis_codec, redis_compress_threshold=redis_compress_threshold,
            enable_redis_data_compression=enable_redis_data_compression,
            max_decompressed_size=max_decompressed_size, signing_key=signing_key)
        self._on_name_conflict = on_server_name_conflict
        self._closed = False
        self.server_name_conflict = False
        self.stats: Dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._dispatcher = Dispatcher(dispatch_concurrency, "cross-server bus dispatch")
        self._channels = Subscriptions(ws_prefix=ws_prefix, system=(self.bridge_channel, self.node_channel),
                                       custom=options.custom, pinned=options.initial)
        self._receiver = Receiver(server_name=server_name, codec=self._codec, channels=self._channels,
                                  dispatcher=self._dispatcher, stats=self.stats, ws_handler=ws_message_handler)
        self._nodes = RedisNodeSet(
            server_name=server_name, on_message=self._receiver.on_node_message, stats=self.stats,
            selection_strategy=selection_strategy, name_check_channel=self.node_channel,
            on_name_conflict=self._on_node_name_conflict, on_health_change=on_redis_health_change,
            on_subscription_error=on_redis_subscription_error, ping_interval=float(redis_ping_interval),
            ping_timeout=float(redis_ping_timeout), force_ping=bool(redis_force_ping),
            connect_timeout=float(connect_timeout), probe_prefix="%sprobe:%s:" % (bridge_prefix, server_name))
        self._outbox = Outbox(server_name=server_name, codec=self._codec, nodes=self._nodes, channels=self._channels,
                              expect_echo=self._receiver.expect_echo)
        self._rpc = BridgeRpc(server_name=server_name, bridge_prefix=bridge_prefix, codec=self._codec,
                              nodes=self._nodes, publish=self._outbox.publish, expect_echo=self._receiver.expect_echo,
                              dispatcher=self._dispatcher, stats=self.stats)
        for channel in self._channels.system:
            self._receiver.route(channel, self._rpc.on_bridge_message)
        try:
            self._nodes.start(options.redis_config, self._channels.wanted())
        except BaseException:
            self.close()
            raise
        logger.info("cross-server bus %r started with %d redis node(s), codec %s",
                    server_name, len(self._nodes), self._codec.codec)

    def __repr__(self) -> str:
        return "CrossServerBus(server_name=%r, nodes=%r)" % (self._server_name, self._nodes.nodes)

    # Properties ---------------------------------------------------------------------------

    @property
    def server_name(self) -> str:
        """This server's name."""
        return self._server_name

    @property
    def healthy(self) -> bool:
        """Whether at least one Redis node has a healthy publisher."""
        return self._nodes.healthy

    @property
    def settled(self) -> bool:
        """Whether at least one Redis node is fully usable: publisher and subscriber up and past
        the recovery grace period, so peers have had time to resubscribe to it."""
        return self._nodes.settled

    @property
    def selection_strategy(self) -> str:
        """``"random"``, ``"round-robin"`` or ``"fastest"``."""
        return self._nodes.selection_strategy

    @property
    def codec(self) -> EnvelopeCodec:
        """The envelope codec (encodes with the configured codec, decodes every format)."""
        return self._codec

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def redis_nodes(self) -> List[RedisNode]:
        """A copy of the list of Redis nodes, in configuration order."""
        return self._nodes.nodes

    @property
    def missed_message_count(self) -> int:
        """Messages from our peers on WebSocket-routing channels that never reached this node.

        Every crossws_sync sender numbers its messages per channel; a receiver that sees a number
        jump counts the numbers in between (Redis pub/sub drops messages while a subscriber
        connection is down). Also in :attr:`stats` (``messages_missed``, and ``messages_late``
        for those that arrived out of order and were taken back). Original Node.js senders
        number nothing and are not counted.
        """
        return self._receiver.gaps.missed

    @property
    def delivery_lag(self) -> Dict[str, Histogram]:
        """Publish → delivery lag, per Redis node label: the time from handing one of our own
        messages to Redis until it came back on our subscriber, for one publish in
        :data:`~crossws_sync.bus.receiver.LAG_SAMPLE_EVERY` on subscribed channels (cluster
        heartbeats included). A peer's delivery takes the same path (Redis's output buffer,
        then the receiving node's listener), measured with one clock."""
        return self._receiver.lag

    @property
    def calls(self) -> PendingCalls:
        """The emits waiting for replies, with their counters (``completed``, ``timeouts``...)."""
        return self._rpc.calls

    @property
    def pending_callback_count(self) -> int:
        """Number of emits still waiting for replies."""
        return len(self._rpc.calls)

    def get_server_name(self) -> str:
        """Return this server's name (the original's ``getServerName``)."""
        return self._server_name

    # Public API: listeners ----------------------------------------------------------------

    def on_cross_server_event(self, event: str, listener: Listener, tag: Any = None) -> None:
        """Call ``listener(data, callback)`` for every ``event`` addressed to this server.

        ``data`` is the whole request envelope (``event``, ``senderServer``, ``payload``,
        ``targetServer``, ``callbackId`` when a reply is wanted; ours also ``replyTo``);
        ``callback(payload)`` publishes a reply, or is ``None`` when the sender wants none. It
        may be called several times; each call is one reply and returns whether it was sent.

        Raises:
            TypeError: ``event`` is not a non-empty string or ``listener`` is not callable.
        """
        self._rpc.listeners.on(event, listener, tag)

    def once_cross_server_event(self, event: str, listener: Listener, tag: Any = None) -> None:
        """Like :meth:`on_cross_server_event`, removed after its first call."""
        self._rpc.listeners.on(event, listener, tag, once=True)

    def off_cross_server_event(self, event: str, listener_or_tag: Any = _SENTINEL) -> None:
        """Remove every listener of ``event``, or the given function, or those with a tag."""
        self._rpc.listeners.off(event, listener_or_tag)

    # Public API: emitting -----------------------------------------------------------------

    def emit_cross_server(self, event: str, message: Any, callback: Optional[ResultCallback] = None, *,
                          target_server: Union[str, Sequence[str], None] = None, timeout: float = DEFAULT_TIMEOUT,
                          expected_responses: int = 1, except_self: bool = False) -> Optional[str]:
        """Send ``event`` with ``message`` to other servers (and to this one when targeted).

        Args:
            event: event name.
            message: the payload (anything JSON-like except ``None``).
            callback: called once per reply with ``Result(success=True, data=<reply envelope>,
                remaining_responses=n)`` and once on timeout with ``Result(success=False,
                error='Cross-server callback timed out.', callback_id, unresponded_count,
                unresponded_servers)``. When no Redis node can take the request it is called at
                once with ``error='No healthy Redis node available'``,
                ``error_code='REDIS_UNAVAILABLE'``.
            target_server: a server name or list of names; empty / ``None`` = every server.
            timeout: seconds to wait for replies (non-positive -> 5.0).
            expected_responses: replies awaited for a broadcast (targeted: one per target).
            except_self: broadcast only: do not deliver to this server.

        Returns:
            The callback id when ``callback`` is given (for :meth:`delete_cross_server_callback`).

        Raises:
            TypeError: invalid event name.
            ConfigError: ``message`` is ``None``.
            EnvelopeError: ``message`` cannot be encoded.
        """
        return self._rpc.emit(event, message, callback, None, target_server, timeout, expected_responses, except_self)

    def emit_cross_server_with_promise(self, event: str, message: Any, *,
                                       target_server: Union[str, Sequence[str], None] = None,
                                       timeout: float = DEFAULT_TIMEOUT, expected_responses: int = 1,
                                       except_self: bool = False) -> AsyncResult:
        """Like :meth:`emit_cross_server`, returning an ``AsyncResult`` that always resolves.

        It resolves to ``Result(success=True, responses={server_name: reply envelope})`` when
        every expected reply arrived, else ``Result(success=False, message=..., responses,
        unresponded_count[, unresponded_servers][, error_code])``. Invalid arguments resolve
        to ``Result(success=False, message=<why>)`` instead of raising, as the original.
        """
        return self._rpc.emit_promise(event, message, target_server, timeout, expected_responses, except_self)

    def emit_cross_server_and_wait(self, event: str, message: Any, *,
                                   target_server: Union[str, Sequence[str], None] = None,
                                   timeout: float = DEFAULT_TIMEOUT, expected_responses: int = 1,
                                   except_self: bool = False) -> Result:
        """Blocking form of :meth:`emit_cross_server_with_promise`: return its ``Result``."""
        result: Result = self.emit_cross_server_with_promise(
            event, message, target_server=target_server, timeout=timeout,
            expected_responses=expected_responses, except_self=except_self).get()
        return result

    def delete_cross_server_callback(self, callback_id: str) -> bool:
        """Forget a pending call: later replies are ignored and its timer is stopped.

        A promise still waiting resolves with ``message='Cross-server callback deleted.'``.

        Returns:
            Whether such a pending call existed.
        """
        return self._rpc.calls.delete(callback_id)

    # Public API: raw channels -------------------------------------------------------------

    def publish_redis_message(self, channel: str, message: Dict[str, Any], *, tag_sender: bool = True) -> bool:
        """Publish a custom ``message`` (a dict) on ``channel``.

        Unlike the original, ``senderServer`` is added to a copy of the message when it has none
        (``tag_sender``), so this server does not receive its own message back; the other
        servers' custom handlers see it.

        Returns:
            True once a Redis node accepted it; False if ``message`` is not a dict, cannot be
            encoded, or no Redis node could take it.

        Raises:
            TypeError: ``channel`` is not a non-empty string.
            InvalidNameError: ``channel`` holds a lone surrogate.
        """
        return self._outbox.publish_custom(channel, message, tag_sender=tag_sender)

    def publish(self, channel: str, message: Any, *, wait: bool = True,
                on_lost: Optional[Callable[[BaseException], None]] = None) -> None:
        """Encode ``message`` once and publish it on one healthy Redis node (failing over).

        Args:
            wait: ``True``: return once Redis acknowledged the PUBLISH. ``False``: queue it and
                return at once, so a sender's consecutive publishes are pipelined in one write;
                if that write fails, the message is re-published on another healthy node from the
                node's writer or reader greenlet (counted in ``stats["publish_failures"]`` when
                none is left).
            on_lost: with ``wait=False``, called (in a node's I/O greenlet, must not block) when a
                queued message could not be written to any node.

        Raises:
            RedisUnavailableError: no Redis node took it (with ``wait=False``: none was healthy).
            EnvelopeError: ``message`` cannot be encoded.
        """
        self._outbox.publish(channel, message, wait=wait, on_lost=on_lost)

    def manual_subscribe(self, channel: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Subscribe a custom channel on every Redis node; its messages go to the custom handler.

        Blocks until every healthy node confirmed (nodes that are down subscribe it when they
        reconnect). Failures are reported through ``on_redis_subscription_error``.

        Returns:
            Whether every healthy node confirmed within ``timeout``.

        Raises:
            TypeError: ``channel`` is not a non-empty string.
        """
        self._channels.add_custom(channel)
        return self._nodes.subscribe(channel, positive_number_or_default(timeout, DEFAULT_TIMEOUT))

    def manual_unsubscribe(self, channel: str) -> None:
        """Unsubscribe a custom channel on every Redis node.

        Raises:
            TypeError: ``channel`` is not a non-empty string.
            ConfigError: ``channel`` is one of the bus's own channels.
        """
        if self._channels.remove_custom(channel):
            self._receiver.forget_channel(channel)
            self._nodes.unsubscribe(channel)

    def subscribe(self, channel: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Subscribe a WebSocket-routing channel (for the WebSocket layer); idempotent.

        Its messages go to ``ws_message_handler``. Blocks like :meth:`manual_subscribe`.
        """
        self._channels.add_ws(channel)
        return self._nodes.subscribe(channel, positive_number_or_default(timeout, DEFAULT_TIMEOUT))

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe a WebSocket-routing channel (for the WebSocket layer); idempotent.

        Raises:
            ConfigError: ``channel`` is a system channel (the bus's or the WebSocket layer's).
        """
        self.unsubscribe_many([channel])

    def unsubscribe_many(self, channels: Iterable[str]) -> None:
        """:meth:`unsubscribe` for many channels, sent as one UNSUBSCRIBE per Redis node."""
        gone = self._channels.remove_ws(channels)
        for channel in gone:
            self._receiver.forget_channel(channel)
        if gone:
            self._nodes.unsubscribe_many(gone)

    def set_custom_channel_handler(self, handler: Callable[[str, Any], Any]) -> None:
        """Set the handler ``(channel, message)`` of every custom-channel message.

        Raises:
            TypeError: ``handler`` is not callable.
        """
        if not callable(handler):
            raise TypeError("Handler must be a function.")
        self._receiver.custom_handler = handler

    def remove_custom_channel_handler(self) -> None:
        """Remove the custom channel handler (custom messages are then dropped)."""
        self._receiver.custom_handler = None

    # Public API: Redis nodes --------------------------------------------------------------

    def add_redis_instance(self, config: RedisConfig) -> None:
        """Add a Redis node: connect, subscribe every current channel, then publish through it.

        Blocks until the node's first connection attempt finished (at most about the connect
        timeout); a node that is down is retried in the background.

        Raises:
            ConfigError: missing / invalid config, or that node is already configured.
        """
        if not config:
            raise ConfigError("Redis configuration is required but missing.")
        if self._closed:
            raise ConfigError("the bus is closed")
        self._nodes.add(config)

    def remove_redis_instance(self, config_or_index: Union[RedisConfig, int], *, drain: float = 1.0) -> bool:
        """Stop using a Redis node: publishing through it stops at once, listening after ``drain``.

        While draining, messages that other servers still publish on that node (they may remove
        it a moment later) are still received; then its greenlets and connections stop.

        Args:
            config_or_index: the node's position in :attr:`redis_nodes`, or a config naming the
                same host, port and db.
            drain: seconds to keep listening on the node (0: close it now).

        Returns:
            Whether a node was removed.
        """
        return self._nodes.remove(config_or_index, drain=drain)

    def get_healthy_redis_instances_count(self, type: str) -> int:  # noqa: A002 - the original's name
        """Count nodes whose ``"publisher"`` or ``"subscriber"`` connection is healthy.

        Raises:
            TypeError: another ``type``.
        """
        return self._nodes.healthy_count(type)

    def get_redis_instances_count(self) -> int:
        """Number of Redis nodes (publisher/subscriber pairs)."""
        return len(self._nodes)

    def wait_healthy(self, timeout: float = 5.0) -> bool:
        """Block until every Redis node is healthy on both connections (or ``timeout``)."""
        return self._nodes.wait_healthy(timeout)

    def abandon(self) -> None:
        """In a forked child: stop what was inherited from the parent without touching Redis.

        Flags everything closed at once (no inherited loop reconnects or publishes), then closes
        in a greenlet of the child; a Redis connection is shut down only in the process that opened
        it (:meth:`RedisConnection.close`), so the parent's connections are untouched.
        """
        if self._closed:
            return
        for node in self._nodes.nodes:
            node.abandon()
        gevent.spawn(self.close)

    def close(self) -> None:
        """Stop every greenlet and close every Redis connection; idempotent.

        Pending calls end at once: callbacks get ``error='Cross-server bus closed.'`` and
        promises resolve with that ``message`` (``error_code='BUS_CLOSED'``).
        """
        if self._closed:
            return
        self._closed = True
        self._nodes.close()
        self._rpc.calls.close()
        self._dispatcher.close()  # close() may be called from a listener: it does not kill itself
        logger.info("cross-server bus %r closed", self._server_name)

    # Internals -----------------------------------------------------------------------------

    def _on_node_name_conflict(self, node: RedisNode, subscribers: int) -> None:
        self.server_name_conflict = True
        logger.error("server name %r is already live in the cluster (%d subscribers of %s on redis %s): "
                     "replies and events will be mixed up; give every server a unique name",
                     self._server_name, subscribers, self.node_channel, node.label)
        hook = self._on_name_conflict
        if hook is not None:
            try:
                hook(Result(server_name=self._server_name, host=node.host, port=node.port, subscribers=subscribers))
            except Exception:
                logger.exception("on_server_name_conflict hook raised")


__all__ = ["CrossServerBus", "STRATEGIES"]
