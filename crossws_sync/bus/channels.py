"""Which channels a bus wants, and why. Pure bookkeeping: the bus sends the (UN)SUBSCRIBEs.

* **system**: the bus's own channels (the bridge channel and this server's node channel);
  never unsubscribed, their messages go to the RPC protocol;
* **custom**: subscribed with ``manual_subscribe``; their messages go to the custom handler,
  also when their name starts with ``ws_prefix``;
* **ws**: WebSocket-routing channels, subscribed by the WebSocket layer; their messages go to
  the ws handler; the **pinned** ones (the WebSocket layer's own) are never unsubscribed.

A channel wanted through both APIs stays subscribed until both released it.
"""
from __future__ import annotations

from typing import FrozenSet, Iterable, List, Set

from ..config import check_channel
from ..errors import ConfigError


class Subscriptions:
    """The channel sets of one bus and the rules between them (see the module docstring)."""

    def __init__(self, *, ws_prefix: str, system: Iterable[str], custom: Iterable[str] = (),
                 pinned: Iterable[str] = ()) -> None:
        self.ws_prefix = ws_prefix
        self.system: FrozenSet[str] = frozenset(system)
        self.custom: Set[str] = set(custom)
        self.pinned: FrozenSet[str] = frozenset(pinned)
        self.ws: Set[str] = set(self.pinned)

    def wanted(self) -> Set[str]:
        """Every channel some API wants subscribed."""
        return set(self.system) | self.custom | self.ws

    def is_ws(self, channel: str) -> bool:
        """Whether a message on ``channel`` (not a system one) goes to the ws handler, not the custom one."""
        return channel in self.ws or (channel.startswith(self.ws_prefix) and channel not in self.custom)

    def is_numbered(self, channel: str) -> bool:
        """Whether our messages on ``channel`` carry sequence numbers (``ws_prefix`` and not custom)."""
        return channel.startswith(self.ws_prefix) and channel not in self.custom

    def add_custom(self, channel: str) -> None:
        """Want ``channel`` as a custom channel (a system channel stays a system channel).

        Raises:
            TypeError: ``channel`` is not a non-empty string.
            InvalidNameError: ``channel`` holds a lone surrogate.
        """
        check_channel(channel)
        if channel not in self.system:
            self.custom.add(channel)

    def remove_custom(self, channel: str) -> bool:
        """Stop wanting ``channel`` as a custom channel.

        Returns:
            Whether to unsubscribe it (no other API wants it).

        Raises:
            TypeError: ``channel`` is not a non-empty string.
            ConfigError: ``channel`` is a system channel.
        """
        check_channel(channel)
        if channel in self.system:
            raise ConfigError("%s is one of the bus's own channels" % channel)
        self.custom.discard(channel)
        return channel not in self.ws and channel not in self.pinned

    def add_ws(self, channel: str) -> None:
        """Want ``channel`` as a WebSocket-routing channel; idempotent.

        Raises:
            TypeError: ``channel`` is not a non-empty string.
            InvalidNameError: ``channel`` holds a lone surrogate.
        """
        check_channel(channel)
        if channel not in self.system:
            self.ws.add(channel)

    def remove_ws(self, channels: Iterable[str]) -> List[str]:
        """Stop wanting ``channels`` as WebSocket-routing channels; all or none.

        Returns:
            Those to unsubscribe (no other API wants them).

        Raises:
            TypeError: a channel is not a non-empty string.
            ConfigError: a channel is a system or pinned channel.
        """
        channels = list(channels)
        for channel in channels:
            check_channel(channel)
            if channel in self.system or channel in self.pinned:
                raise ConfigError("%s is a system channel; it is never unsubscribed" % channel)
        self.ws.difference_update(channels)
        return [channel for channel in dict.fromkeys(channels) if channel not in self.custom]
