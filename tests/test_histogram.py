"""crossws_sync.core.histogram: bucket edges, cumulative counts, quantile estimates."""
import math

import pytest

from crossws_sync.core.histogram import LAG_BUCKETS, Histogram


def test_values_fall_in_the_first_bucket_whose_bound_they_do_not_exceed():
    h = Histogram([0.1, 1.0])
    for value in (0.0, 0.1, 0.10001, 1.0, 7.0, -3.0):
        h.observe(value)
    assert h.cumulative() == [("0.1", 3), ("1.0", 5), ("+Inf", 6)]
    assert h.count == 6 and h.sum == pytest.approx(0.1 + 0.10001 + 1.0 + 7.0)


def test_quantiles_are_bucket_upper_bounds():
    h = Histogram()
    assert h.quantile(0.99) == 0.0
    for _ in range(98):
        h.observe(0.0003)
    h.observe(0.02)
    h.observe(30.0)
    assert h.quantile(0.5) == 0.0005 and h.quantile(0.99) == 0.025 and math.isinf(h.quantile(1.0))
    assert h.cumulative()[-2] == (repr(LAG_BUCKETS[-1]), 99)


@pytest.mark.parametrize("buckets", [[], [1.0, 1.0], [2.0, 1.0]])
def test_bad_buckets_are_refused(buckets):
    with pytest.raises(ValueError):
        Histogram(buckets)
