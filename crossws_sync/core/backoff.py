"""Reconnect delay schedule of the client, sans I/O.

The original connector waits ``fast_reconnect_interval`` for the first
``fast_reconnect_threshold`` attempts, then doubles a base delay per attempt, adds up to one
interval of random jitter, caps the result at ``reconnect_max_interval`` and never goes below
the fast interval. Times here are seconds; the result is floored to whole milliseconds
exactly like the original's ``Math.floor`` on milliseconds, so the probed numbers of the
original (interval 50 ms, threshold 2, max 1000 ms: 50, 50, 140, 221, 449, 841, 1000) come out
as 0.05, 0.05, 0.14, 0.221, 0.449, 0.841, 1.0 for the same random draws.

With ``jitter="full"`` (the clients' default) the delay is instead drawn uniformly in
``[0, d]``, where ``d`` is the schedule's delay without its own random term ("full jitter",
as centrifuge-js and socket.io-client randomise theirs): a fixed schedule brings every client
that lost the same server back at the same instant; a full-jitter one spreads them over the
whole window.

Pure: no gevent, no sockets, no sleeping.
"""
from __future__ import annotations

import math
import random as _random
from typing import Callable

from ..errors import ConfigError

#: Beyond this many doublings the exponential term exceeds any sane cap; stop computing it
#: (the original computes ``2 ** n`` and would reach ``Infinity``; Python would overflow).
_MAX_DOUBLINGS = 64

#: ``jitter`` values: ``"full"`` (uniform in ``[0, d]``) and ``"original"`` (the original's schedule).
JITTER_MODES = ("full", "original")


def check_jitter(value: object, name: str = "reconnect_jitter") -> str:
    """Return ``value`` when it is one of :data:`JITTER_MODES`.

    Raises:
        ConfigError: anything else.
    """
    if value not in JITTER_MODES:
        raise ConfigError("%s must be 'full' or 'original', got %r" % (name, value))
    return str(value)


def reconnect_delay(
    attempt: int,
    *,
    threshold: int = 3,
    interval: float = 3.0,
    max_interval: float = 120.0,
    random: Callable[[], float] = _random.random,
    jitter: str = "original",
) -> float:
    """Return the delay in seconds before reconnect attempt number ``attempt``.

    Args:
        attempt: 1 for the first attempt after a loss (the original's ``repeat`` after its
            increment).
        threshold: number of attempts that use the fixed ``interval``
            (``fast_reconnect_threshold``).
        interval: fast interval in seconds; also the base unit of the exponential part, the
            jitter range and the minimum delay (``fast_reconnect_interval``).
        max_interval: cap of the exponential part in seconds (``reconnect_max_interval``).
        random: source of uniform floats in ``[0, 1)`` for the jitter (injectable for tests).
        jitter: ``"original"`` (the default here: the schedule below) or ``"full"``: a uniform
            draw in ``[0, d]`` where ``d`` is ``interval`` for the fast attempts, else
            ``min(2 ** (attempt - threshold) * interval, max_interval)``; floored to milliseconds.

    Returns:
        ``interval`` when ``attempt <= threshold``, else
        ``max(min(2 ** (attempt - threshold) * interval + random() * interval, max_interval),
        interval)`` floored to whole milliseconds.

    Raises:
        ConfigError: ``attempt`` < 1, a negative ``threshold``, a non-positive interval or an
            unknown ``jitter``.
    """
    check_jitter(jitter, "jitter")
    if attempt < 1:
        raise ConfigError("attempt must be >= 1, got %r" % (attempt,))
    if threshold < 0:
        raise ConfigError("threshold must be >= 0, got %r" % (threshold,))
    if not interval > 0 or not max_interval > 0:
        raise ConfigError("interval and max_interval must be positive")
    interval_ms = interval * 1000.0
    if jitter == "full":
        if attempt <= threshold:
            ceiling_ms = interval_ms
        elif attempt - threshold > _MAX_DOUBLINGS:
            ceiling_ms = max_interval * 1000.0
        else:
            ceiling_ms = min((2 ** (attempt - threshold)) * interval_ms, max_interval * 1000.0)
        return math.floor(random() * ceiling_ms + 1e-6) / 1000.0
    if attempt <= threshold:
        return interval
    doublings = attempt - threshold
    if doublings > _MAX_DOUBLINGS:
        delay_ms = max_interval * 1000.0
    else:
        delay_ms = min((2 ** doublings) * interval_ms + random() * interval_ms, max_interval * 1000.0)
    delay_ms = max(delay_ms, interval_ms)
    # The epsilon keeps 140.0 from becoming 139 when 0.05 * 1000 * 2.8 lands on 139.99999...
    return math.floor(delay_ms + 1e-6) / 1000.0


__all__ = ["JITTER_MODES", "check_jitter", "reconnect_delay"]
