"""The reconnect delay schedule (pure), checked against the original's probed numbers."""
import random

import pytest

from crossws_sync.core.backoff import reconnect_delay
from crossws_sync.errors import ConfigError


def _fixed(value):
    return lambda: value


def test_probed_sequence_of_the_original():
    # Probed on the original: interval 50 ms, threshold 2, max 1000 ms -> 50, 50, 140, 221, 449, 841, 1000.
    # The random draws that produce those jitters: (140-100)/50, (221-200)/50, (449-400)/50, (841-800)/50.
    draws = {3: 0.8, 4: 0.42, 5: 0.98, 6: 0.82, 7: 0.5}
    delays = [
        reconnect_delay(n, threshold=2, interval=0.05, max_interval=1.0, random=_fixed(draws.get(n, 0.0)))
        for n in range(1, 8)
    ]
    assert delays == [0.05, 0.05, 0.14, 0.221, 0.449, 0.841, 1.0]


def test_default_schedule_ranges():
    # the original's schedule: defaults: 1-3: 3000 ms; 4: 6000-8999; 5: 12000-14999; 6: 24000-26999;
    # 7: 48000-50999; 8: 96000-98999; 9+: 120000.
    expected = {4: (6.0, 8.999), 5: (12.0, 14.999), 6: (24.0, 26.999), 7: (48.0, 50.999), 8: (96.0, 98.999)}
    for attempt in (1, 2, 3):
        assert reconnect_delay(attempt) == 3.0
    for attempt, (low, high) in expected.items():
        assert reconnect_delay(attempt, random=_fixed(0.0)) == low
        assert reconnect_delay(attempt, random=_fixed(0.9999999)) == high
    for attempt in (9, 10, 50, 10_000):
        assert reconnect_delay(attempt, random=_fixed(0.5)) == 120.0


def test_jitter_stays_in_range_with_real_randomness():
    rng = random.Random(7)
    for _ in range(500):
        delay = reconnect_delay(5, random=rng.random)
        assert 12.0 <= delay < 15.0
        assert round(delay * 1000) == delay * 1000  # whole milliseconds


def test_never_below_the_fast_interval():
    # A cap below the fast interval: the original clamps up to the fast interval.
    assert reconnect_delay(5, threshold=1, interval=2.0, max_interval=0.5, random=_fixed(0.3)) == 2.0
    # threshold 0: even the first attempt backs off.
    assert reconnect_delay(1, threshold=0, interval=1.0, max_interval=100.0, random=_fixed(0.0)) == 2.0


def test_huge_attempt_numbers_do_not_overflow():
    assert reconnect_delay(10 ** 6, threshold=3, interval=3.0, max_interval=120.0) == 120.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempt": 0},
        {"attempt": 1, "threshold": -1},
        {"attempt": 4, "interval": 0},
        {"attempt": 4, "max_interval": -1.0},
    ],
)
def test_invalid_arguments(kwargs):
    attempt = kwargs.pop("attempt")
    with pytest.raises(ConfigError):
        reconnect_delay(attempt, **kwargs)


def test_full_jitter_is_uniform_over_zero_to_the_schedule_delay():
    rng = random.Random(19)
    for attempt, ceiling in ((1, 3.0), (3, 3.0), (4, 6.0), (6, 24.0), (9, 120.0), (500, 120.0)):
        delays = [reconnect_delay(attempt, jitter="full", random=rng.random) for _ in range(4000)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # spread over the whole window: every tenth of it is hit, the mean is near the middle
        assert {int(d / ceiling * 10) for d in delays} >= set(range(10))
        assert abs(sum(delays) / len(delays) - ceiling / 2) < ceiling * 0.03


def test_full_jitter_bounds_and_milliseconds():
    assert reconnect_delay(1, jitter="full", random=_fixed(0.0)) == 0.0
    assert reconnect_delay(5, jitter="full", random=_fixed(0.5)) == 6.0  # 0.5 * 2**2 * 3 s
    assert reconnect_delay(4, threshold=2, interval=0.05, max_interval=1.0, jitter="full",
                           random=_fixed(0.12345)) == 0.024  # floored to whole milliseconds
    assert reconnect_delay(4, jitter="full", random=_fixed(0.9999999)) <= 6.0


@pytest.mark.parametrize("jitter", ["", "none", "FULL", None, 1])
def test_unknown_jitter(jitter):
    with pytest.raises(ConfigError):
        reconnect_delay(1, jitter=jitter)
