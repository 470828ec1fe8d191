"""The accept-rate token bucket (pure, with an injected clock) and the Retry-After it gives."""
import pytest

from crossws_sync.core.admission import AcceptBucket, retry_after_seconds
from crossws_sync.errors import ConfigError


def test_burst_then_rate():
    bucket = AcceptBucket(10, 5)
    assert [bucket.take(100.0) for _ in range(5)] == [0.0] * 5
    wait = bucket.take(100.0)
    assert wait == pytest.approx(0.1)  # one token every 1/10 s
    assert bucket.take(100.05) == pytest.approx(0.05)  # a refusal takes nothing
    assert bucket.take(100.1) == 0.0
    assert bucket.take(100.1) > 0


def test_refill_is_capped_at_the_burst():
    bucket = AcceptBucket(2, 3)
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.tokens(1000.0) == 3.0
    assert [bucket.take(1000.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert bucket.take(1000.0) == pytest.approx(0.5)


def test_long_run_rate():
    bucket = AcceptBucket(50, 10)
    accepted = sum(1 for step in range(10000) if bucket.take(step * 0.001) == 0.0)  # 1000 tries/s for 10 s
    assert 10 + 50 * 10 - 2 <= accepted <= 10 + 50 * 10


def test_a_clock_going_backwards_adds_nothing():
    bucket = AcceptBucket(1, 1)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) == pytest.approx(1.0)
    assert bucket.take(10.5) == pytest.approx(0.5)


def test_refill_time():
    assert AcceptBucket(4, 20).refill_time == 5.0


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (float("inf"), 1), (float("nan"), 1), (True, 1), ("5", 1),
                                         (1, 0), (1, 1.5), (1, True)])
def test_invalid(rate, burst):
    with pytest.raises(ConfigError):
        AcceptBucket(rate, burst)


def test_retry_after_is_whole_seconds_at_least_one_and_jittered():
    assert retry_after_seconds(0.01, 1.0, random=lambda: 0.0) == 1
    assert retry_after_seconds(0.0, 0.0, random=lambda: 0.0) == 1
    assert retry_after_seconds(2.5, 4.0, random=lambda: 0.0) == 3
    assert retry_after_seconds(2.5, 4.0, random=lambda: 0.999) == 7
    draws = iter(i / 100 for i in range(100))
    values = {retry_after_seconds(0.1, 10.0, random=lambda: next(draws)) for _ in range(100)}
    assert values == set(range(1, 11))  # spread over the whole window, not all equal


def test_refused_clients_are_booked_slots_one_token_apart_so_the_wait_grows_with_the_crowd():
    bucket = AcceptBucket(10, 2)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    waits = []
    for _ in range(30):  # a crowd refused at the same instant
        wait = bucket.take(0.0)
        assert wait > 0
        waits.append(bucket.book(0.0, wait))
    assert waits[0] == pytest.approx(0.1) and waits[-1] == pytest.approx(3.0)
    assert all(b - a == pytest.approx(0.1) for a, b in zip(waits, waits[1:]))  # the accept rate, exactly
    # later refusals queue behind them; once the slots are in the past, they start from the next token
    assert bucket.book(1.0, 0.05) == pytest.approx(2.1)
    assert bucket.book(100.0, 0.05) == pytest.approx(0.05)


def test_no_slot_lies_beyond_the_cap():
    bucket = AcceptBucket(1, 1)
    bucket.take(0.0)
    waits = [bucket.book(0.0, bucket.take(0.0), max_delay=5.0) for _ in range(10)]
    assert waits[:5] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0]) and set(waits[5:]) == {5.0}
