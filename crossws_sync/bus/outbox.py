"""Publishing for one bus: each message encoded once, numbered on WebSocket-routing channels,
its echo expected by the receiver, published on one healthy Redis node (failing over)."""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from ..config import check_channel
from ..errors import EnvelopeError, RedisUnavailableError
from ..wire import envelope as env
from ..wire.codec import EnvelopeCodec
from ..wire.sequence import SequenceStamper
from .channels import Subscriptions
from .nodes import RedisNodeSet

logger = logging.getLogger("crossws_sync.bus")

#: ``on_lost(error)``: a queued message could not be written to any node.
LostHook = Callable[[BaseException], None]


class Outbox:
    """The publishing side of one bus.

    Args:
        server_name: this server's name: messages it sent are numbered and their echoes expected.
        codec: encodes every message once.
        nodes: the Redis nodes that publish.
        channels: tells which channels are numbered.
        expect_echo: told the bytes of each of our messages on a subscribed channel.
    """

    def __init__(self, *, server_name: str, codec: EnvelopeCodec, nodes: RedisNodeSet, channels: Subscriptions,
                 expect_echo: Callable[[bytes], None]) -> None:
        self._server_name = server_name
        self._codec = codec
        self._nodes = nodes
        self._channels = channels
        self._expect_echo = expect_echo
        self._stamper = SequenceStamper()

    def publish(self, channel: str, message: Any, *, wait: bool = True, on_lost: Optional[LostHook] = None) -> None:
        """:meth:`send`, after numbering our own dict messages on numbered channels.

        Raises:
            RedisUnavailableError: no Redis node took it (with ``wait=False``: none was healthy).
            EnvelopeError: ``message`` cannot be encoded.
        """
        if (type(message) is dict and self._channels.is_numbered(channel)
                and message.get("senderServer") == self._server_name):
            self._stamper.stamp(channel, message)
        self.send(channel, message, wait, on_lost)

    def send(self, channel: str, message: Any, wait: bool = True, on_lost: Optional[LostHook] = None) -> None:
        """Encode ``message`` once and publish it as it is.

        Args:
            wait: ``True``: return once Redis acknowledged the PUBLISH; ``False``: queue it.
            on_lost: with ``wait=False``, called when no node could write it.

        Raises:
            RedisUnavailableError: no Redis node took it (with ``wait=False``: none was healthy).
            EnvelopeError: ``message`` cannot be encoded.
        """
        raw = self._codec.encode(message, channel)
        if channel in self._nodes.channels and env.sender_of(message) == self._server_name:
            self._expect_echo(raw)
        if wait:
            self._nodes.publish(channel, raw)
        else:
            self._nodes.publish_nowait(channel, raw, on_lost)

    def publish_custom(self, channel: str, message: Dict[str, Any], *, tag_sender: bool) -> bool:
        """Publish a custom dict unnumbered, adding ``senderServer`` to a copy when ``tag_sender``.

        Returns:
            True once a Redis node accepted it; False if ``message`` is not a dict, cannot be
            encoded, or no Redis node could take it (each logged).

        Raises:
            TypeError: ``channel`` is not a non-empty string.
            InvalidNameError: ``channel`` holds a lone surrogate.
        """
        check_channel(channel)
        if type(message) is not dict:
            logger.warning("publish_redis_message: message must be a dict, got %s", type(message).__name__)
            return False
        if tag_sender and "senderServer" not in message:
            message = dict(message, senderServer=self._server_name)
        try:
            self.send(channel, message)
        except (RedisUnavailableError, EnvelopeError) as exc:
            logger.warning("publish_redis_message on %s failed: %s", channel, exc)
            return False
        return True
