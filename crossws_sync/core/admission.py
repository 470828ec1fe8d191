"""The accept-rate limit of WebSocket upgrades: a token bucket, sans I/O.

A reconnect storm (a node restarts, a load balancer flaps) brings every client back within the
same second. :class:`AcceptBucket` lets ``burst`` upgrades through at once and then ``rate``
per second; the service answers the others ``503`` with ``Retry-After`` before it spends
anything on them (no authentication, no connection object). Each refused client is *booked* a
later slot (:meth:`AcceptBucket.book`): slots are ``1 / rate`` apart, after the last one booked,
so ``Retry-After`` grows with the crowd waiting and the clients that obey it come back at the
rate the node accepts, each refused about once. A client that ignores it books slots that go
unused; no slot lies more than :data:`MAX_RETRY_AFTER` ahead.

Pure: the clock is an argument (``now``, seconds of any monotonic clock), the randomness is
injectable; no gevent, no sockets, no sleeping.
"""
from __future__ import annotations

import math
import random as _random
from typing import Callable, Optional

from ..errors import ConfigError

#: The furthest a refused client is sent into the future (seconds).
MAX_RETRY_AFTER = 60.0


class AcceptBucket:
    """A token bucket: ``burst`` tokens at most, refilled at ``rate`` tokens per second.

    Args:
        rate: tokens added per second (accepted upgrades per second in the long run).
        burst: bucket size (upgrades accepted at once after a quiet period); full at start.

    Raises:
        ConfigError: a rate that is not a positive finite number, or a burst below 1.
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "_booked")

    def __init__(self, rate: float, burst: int) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
            raise ConfigError("rate must be a positive finite number, got %r" % (rate,))
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError("burst must be an integer >= 1, got %r" % (burst,))
        self.rate = float(rate)
        self.burst = burst
        self._tokens = float(burst)
        self._stamp: Optional[float] = None
        self._booked = -math.inf  # the last slot booked for a refused client

    def take(self, now: float) -> float:
        """Take one token at time ``now``.

        Returns:
            ``0.0`` when a token was taken (accept), else the seconds until the next token
            (refuse; nothing is taken). A clock that goes backwards adds nothing.
        """
        tokens = self.tokens(now)
        if tokens >= 1.0 - 1e-9:  # float sums of small refills land just below whole tokens
            self._tokens = max(0.0, tokens - 1.0)
            return 0.0
        return (1.0 - tokens) / self.rate

    def tokens(self, now: float) -> float:
        """The tokens available at ``now`` (refills the bucket up to that time)."""
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now
        return self._tokens

    def book(self, now: float, wait: float, max_delay: float = MAX_RETRY_AFTER) -> float:
        """Book a slot for a client refused at ``now``; return the seconds until it.

        Args:
            now: the time of the refusal (the clock of :meth:`take`).
            wait: what :meth:`take` returned (the next token is that far).
            max_delay: no slot lies further ahead; when the crowd would need more, the slots
                past it are spread uniformly by the caller's jitter and overlap.

        Returns:
            ``max(wait, last slot + 1 / rate - now)``, at most ``max_delay``.
        """
        slot = min(max(now + wait, self._booked + 1.0 / self.rate), now + max_delay)
        self._booked = slot
        return slot - now

    @property
    def refill_time(self) -> float:
        """Seconds the empty bucket takes to fill up again (``burst / rate``)."""
        return self.burst / self.rate


def retry_after_seconds(wait: float, spread: float, random: Callable[[], float] = _random.random) -> int:
    """The ``Retry-After`` value (whole seconds, RFC 9110 ``delay-seconds``) of a refused upgrade.

    Args:
        wait: seconds until the client's slot (:meth:`AcceptBucket.book`).
        spread: jitter added to ``wait`` times a uniform random draw (at least one second:
            the header has whole seconds, so the clients of one second are spread over it).
        random: source of uniform floats in ``[0, 1)`` (injectable for tests).

    Returns:
        ``ceil(wait + random() * spread)``, at least 1.
    """
    return max(1, int(math.ceil(max(0.0, wait) + random() * max(1.0, spread))))


__all__ = ["AcceptBucket", "MAX_RETRY_AFTER", "retry_after_seconds"]
