"""A cumulative latency histogram with fixed buckets, sans I/O (Prometheus's histogram shape).

Used for the bus's publish→delivery lag: cheap enough to observe on a hot path (one bisect and
three additions), exported at scrape time as a Prometheus histogram.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import List, Sequence, Tuple

#: Seconds: from a fast local Redis round trip (~0.1 ms) to a stalled node (several seconds).
LAG_BUCKETS: Tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                  2.5, 5.0, 10.0)


class Histogram:
    """Counts of observations per bucket (``value <= bound``), plus their count and sum.

    Args:
        buckets: increasing upper bounds; ``+Inf`` is implied.

    Raises:
        ValueError: ``buckets`` empty or not strictly increasing.
    """

    __slots__ = ("bounds", "_counts", "count", "sum")

    def __init__(self, buckets: Sequence[float] = LAG_BUCKETS) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(a >= b for a, b in zip(bounds, bounds[1:])):
            raise ValueError("buckets must be a non-empty, strictly increasing sequence")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record one observation (negative values, e.g. from a clock step, count as 0)."""
        if value < 0:
            value = 0.0
        self._counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> List[Tuple[str, int]]:
        """``[(upper bound as text, observations <= it), ..., ("+Inf", count)]``."""
        out: List[Tuple[str, int]] = []
        running = 0
        for bound, count in zip(self.bounds, self._counts):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", self.count))
        return out

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (0..1): an upper estimate; ``0.0``
        with no observations, ``inf`` when it lies above every bound."""
        if self.count == 0:
            return 0.0
        rank = q * self.count
        running = 0
        for bound, count in zip(self.bounds, self._counts):
            running += count
            if running >= rank:
                return bound
        return float("inf")


__all__ = ["Histogram", "LAG_BUCKETS"]
