"""Messages for users held while no Redis node can take them, sent in order once one can.

The router publishes every message for users on other nodes through the bus. When no Redis
node is healthy (``publish`` refuses at once) or a pipelined write reached no node (the bus's
``on_lost``), the message goes into an :class:`OutageBuffer` instead of being lost: at most
``size`` messages (the oldest are dropped first), each for at most ``age`` seconds. One drain
greenlet waits until a node is *settled* (up and past its recovery grace, so that every peer
has resubscribed to it) and publishes the held messages in their order. Overflow and expiry
are counted in the router's stats and logged once per outage.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Optional, Tuple

import gevent

from ..errors import CrossWSError

if TYPE_CHECKING:
    from ..bus.bus import CrossServerBus

#: ``send(channel, message, on_lost)``: how a held message is published again.
Send = Callable[[str, Dict[str, Any], Callable[[BaseException], None]], None]

logger = logging.getLogger("crossws_sync.cluster")


class OutageBuffer:
    """The bounded, ordered buffer of one router.

    Args:
        size: most messages held.
        age: seconds a held message stays sendable.
        stats: the router's counters (``outage_buffered``, ``outage_flushed``, ``outage_dropped``).
        bus: returns the bus to publish on (``None`` while there is none).
        stopped: whether the router stopped (the drain ends).
    """

    def __init__(self, *, size: int, age: float, stats: Dict[str, int],
                 bus: Callable[[], Optional["CrossServerBus"]], stopped: Callable[[], bool]) -> None:
        self.size = size
        self.age = age
        self.stats = stats
        self._bus = bus
        self._stopped = stopped
        self._held: Deque[Tuple[float, str, Dict[str, Any], Optional[Send]]] = deque()
        self._drainer: Optional[gevent.Greenlet] = None

    def __len__(self) -> int:
        """Messages held now."""
        return len(self._held)

    def publish(self, channel: str, message: Dict[str, Any]) -> None:
        """Publish a message for users, or hold it: behind held ones (order), or when no node
        takes it."""
        if self._held:
            self.hold(channel, message)
            return
        bus = self._bus()
        if bus is None:
            return
        try:
            bus.publish(channel, message, wait=False, on_lost=self._requeue(channel, message))
        except CrossWSError as exc:
            logger.warning("no Redis node can take messages (%s): buffering up to %d messages / %.0f s",
                           exc, self.size, self.age)
            self.hold(channel, message)

    def hold(self, channel: str, message: Dict[str, Any], send: Optional[Send] = None) -> None:
        """Keep ``message`` for later (dropping the oldest when full) and start the drain.

        Args:
            send: ``send(channel, message, on_lost)`` tries it again (default: the bus's publish).
        """
        held = self._held
        if len(held) >= self.size:
            held.popleft()
            self.stats["outage_dropped"] += 1
        held.append((time.monotonic(), channel, message, send))
        self.stats["outage_buffered"] += 1
        if self._drainer is None:
            self._drainer = gevent.spawn(self._drain)

    def stop(self) -> None:
        """Stop the drain (the router stops); what is held is dropped with the router."""
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.kill(block=False)

    def _requeue(self, channel: str, message: Dict[str, Any], send: Optional[Send] = None) -> Callable[[BaseException], None]:
        """What the bus calls when a queued write reached no Redis node: hold it for later."""

        def lost(error: BaseException) -> None:
            self.hold(channel, message, send)

        return lost

    def _drain(self) -> None:
        held = self._held
        try:
            while held and not self._stopped():
                bus = self._bus()
                # Wait for a settled node: right after a restart, peers may not have resubscribed.
                if bus is None or not bus.settled:
                    gevent.sleep(0.05)
                    continue
                stamp, channel, message, send = held[0]
                if time.monotonic() - stamp > self.age:
                    held.popleft()
                    self.stats["outage_dropped"] += 1
                    continue
                try:
                    if send is not None:
                        send(channel, message, self._requeue(channel, message, send))
                    else:
                        bus.publish(channel, message, wait=False, on_lost=self._requeue(channel, message))
                except CrossWSError:
                    gevent.sleep(0.05)
                    continue
                held.popleft()
                self.stats["outage_flushed"] += 1
            if self.stats["outage_dropped"]:
                logger.warning("Redis outage over: %d buffered messages sent, %d dropped so far (buffer full or too old)",
                               self.stats["outage_flushed"], self.stats["outage_dropped"])
        finally:
            self._drainer = None


__all__ = ["OutageBuffer"]
