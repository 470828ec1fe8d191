"""What arrives from Redis: our own echoes dropped undecoded, decoding, sequence gaps, routing by channel.

Each node's listener greenlet calls :meth:`Receiver.on_node_message` in order. A message on a
system channel goes to the handler routed to it (the RPC protocol), one on a WebSocket-routing
channel to the ws handler (inline: it must not block), anything else to the custom handler (on
a worker greenlet).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, Set

from ..core.histogram import Histogram
from ..io.dispatch import Dispatcher
from ..wire.positions import POSITION_FIELD
from ..wire import envelope as env
from ..wire.codec import EnvelopeCodec
from ..wire.sequence import EPOCH_FIELD, SEQ_FIELD, GapDetector
from ..errors import EnvelopeError
from .channels import Subscriptions
from .node import RedisNode
from .rpc import guarded

logger = logging.getLogger("crossws_sync.bus")

#: Seconds between two warnings about missed messages (each says how many since the last).
GAP_LOG_INTERVAL = 10.0

#: Peers named in a codec-mismatch warning (one warning each; a flood of names stays quiet).
MAX_WARNED_PEERS = 1000

#: Own publishes whose echo the listener expects (dropped undecoded); cleared when exceeded.
MAX_PENDING_ECHOES = 4096

#: One expected echo in this many is timed (publish → back from Redis: the bus's delivery lag).
LAG_SAMPLE_EVERY = 16

#: ``handler(channel, message)`` of decoded messages.
Handler = Callable[[str, Any], Any]


class Receiver:
    """The receiving side of one bus (see the module docstring).

    Args:
        server_name: this server's name; messages it sent are dropped.
        codec: decodes every format; its configured codec is what peers are compared to.
        channels: classifies channels as ws or custom.
        dispatcher: runs the custom handler.
        stats: the bus's counters (``received``, ``self_echoes``, ``decode_errors``,
            ``foreign_codec``, ``dropped``, ``messages_missed``, ``messages_late``).
        ws_handler: ``(channel, envelope)`` for WebSocket-routing messages, or ``None`` (dropped).
    """

    def __init__(self, *, server_name: str, codec: EnvelopeCodec, channels: Subscriptions, dispatcher: Dispatcher,
                 stats: Dict[str, int], ws_handler: Optional[Handler]) -> None:
        self._server_name = server_name
        self._codec = codec
        self._channels = channels
        self._dispatcher = dispatcher
        self.stats = stats
        self._ws_handler = ws_handler
        #: ``(channel, message)`` of custom-channel messages; ``None``: they are dropped
        self.custom_handler: Optional[Handler] = None
        self.gaps = GapDetector()
        self._routes: Dict[str, Handler] = {}
        self._echoes: Dict[bytes, int] = {}
        #: sampled own publishes -> when they were handed to Redis (monotonic)
        self._timed: Dict[bytes, float] = {}
        self._untimed = 0
        #: publish → delivery lag per Redis node (label), measured on this node's own messages
        #: as they come back: one clock, so no skew between machines
        self.lag: Dict[str, Histogram] = {}
        self._foreign_codec_peers: Set[str] = set()
        self._gap_logged_at = 0.0
        self._gap_logged_missed = 0

    def route(self, channel: str, handler: Handler) -> None:
        """Send the decoded messages of the system ``channel`` to ``handler``, inline."""
        self._routes[channel] = handler

    def expect_echo(self, raw: bytes) -> None:
        """Drop the next arrival of exactly ``raw`` undecoded: it is our own publish coming back.

        Entries whose echo never comes (a lost publish, a subscriber outage) are forgotten in bulk.
        """
        echoes = self._echoes
        if len(echoes) >= MAX_PENDING_ECHOES:
            echoes.clear()
            self._timed.clear()
        echoes[raw] = echoes.get(raw, 0) + 1
        self._untimed += 1
        if self._untimed >= LAG_SAMPLE_EVERY and raw not in self._timed:
            self._untimed = 0
            self._timed[raw] = time.monotonic()

    def forget_channel(self, channel: str) -> None:
        """Forget the sequence numbers seen on an unsubscribed channel."""
        self.gaps.forget_channel(channel)

    def on_node_message(self, node: RedisNode, channel: str, raw: bytes) -> None:
        """Called by each node's listener greenlet, in order, for every message."""
        self.stats["received"] += 1
        node.counts["received"] += 1
        echoes = self._echoes.pop(raw, 0)
        if echoes:  # our own message coming back: dropped without decoding it
            if echoes > 1:
                self._echoes[raw] = echoes - 1
            self.stats["self_echoes"] += 1
            if self._timed:
                sent = self._timed.pop(raw, None)
                if sent is not None:
                    lag = self.lag.get(node.label)
                    if lag is None:
                        lag = self.lag[node.label] = Histogram()
                    lag.observe(time.monotonic() - sent)
            return
        try:
            message = self._codec.decode(raw, channel)
        except EnvelopeError as exc:
            self._undecodable(node, channel, exc)
            return
        sender = env.sender_of(message)
        if sender == self._server_name and not (type(message) is dict and POSITION_FIELD in message):
            # (A positioned message comes back on purpose: this node's own clients get it with
            # its history position, like everyone else's.)
            self.stats["self_echoes"] += 1
            return
        if self._codec.last_format != self._codec.codec:
            self._note_foreign_codec(sender, channel)
        handler = self._routes.get(channel)
        if handler is not None:
            handler(channel, message)
        elif self._channels.is_ws(channel):
            if sender is not None and SEQ_FIELD in message:
                self._check_sequence(channel, sender, message)
            self._handle_ws(channel, message)
        else:
            self._handle_custom(channel, message)

    def _undecodable(self, node: RedisNode, channel: str, exc: EnvelopeError) -> None:
        self.stats["decode_errors"] += 1
        node.counts["decode_errors"] += 1
        count = self.stats["decode_errors"]
        if count in (1, 10, 100, 1000) or count % 10000 == 0:  # log budget: a flood stays quiet
            logger.warning("undecodable message on %s from redis %s dropped (%d so far): %s",
                           channel, node.label, count, exc)

    def _check_sequence(self, channel: str, sender: str, message: Dict[str, Any]) -> None:
        gaps = self.gaps
        gap = gaps.check(channel, sender, message.get(EPOCH_FIELD), message.get(SEQ_FIELD))
        self.stats["messages_missed"] = gaps.missed
        self.stats["messages_late"] = gaps.late
        if not gap:
            return
        now = time.monotonic()
        if now - self._gap_logged_at >= GAP_LOG_INTERVAL:
            logger.warning("%d message(s) from other servers never arrived since the last report (%d in all; "
                           "latest: from %r on %s): Redis dropped them, e.g. while this node's subscriber "
                           "connection was down", gaps.missed - self._gap_logged_missed, gaps.missed, sender, channel)
            self._gap_logged_at = now
            self._gap_logged_missed = gaps.missed

    def _note_foreign_codec(self, sender: Optional[str], channel: str) -> None:
        # A peer that publishes in the other codec may be unable to read ours: an original node
        # reads only its own codec ("Decompression failed" / "Parsing failed" on each message).
        self.stats["foreign_codec"] += 1
        peer = sender if sender is not None else "?"
        if peer in self._foreign_codec_peers or len(self._foreign_codec_peers) >= MAX_WARNED_PEERS:
            return
        self._foreign_codec_peers.add(peer)
        theirs = self._codec.last_format
        logger.warning(
            "server %r publishes %s on %s but this node publishes %s: an original node can read only "
            "its own codec, so it may not read ours; give every node the same codec (ours: "
            "redis_codec=%r or enable_redis_data_compression=%s; the original: "
            "enableRedisDataCompression: %s)", peer, theirs, channel, self._codec.codec, theirs,
            theirs == "msgpack", "true" if theirs == "msgpack" else "false")

    def _handle_ws(self, channel: str, message: Any) -> None:
        handler = self._ws_handler
        if handler is None:
            self.stats["dropped"] += 1
            return
        try:
            handler(channel, message)
        except Exception:
            logger.exception("ws message handler failed on %s", channel)

    def _handle_custom(self, channel: str, message: Any) -> None:
        handler = self.custom_handler
        if handler is None:
            self.stats["dropped"] += 1
            logger.debug("message on %s dropped: no custom channel handler", channel)
            return
        self._dispatcher.submit(guarded, handler, channel, message)
