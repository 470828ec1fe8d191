"""crossws_sync.client.options: the client's constructor options, checked with config's helpers."""
import math

import pytest

from crossws_sync.client.options import ClientOptions, client_options
from crossws_sync.config import positive_int, positive_number
from crossws_sync.errors import ConfigError

DEFAULTS = dict(ping_interval=10.0, pong_timeout=2.0, fast_reconnect_threshold=3, fast_reconnect_interval=3.0,
                reconnect_max_interval=120.0, ping_msg="", callback_timeout=5.0, repeat_limit=None,
                pending_timeout=0.1, custom_params=None, connect_timeout=10.0, auto_reconnect=False,
                no_reconnect_codes=(4001, 4010, 4011, 4012), headers=None, ssl_context=None,
                per_message_deflate=False)


def options(url="ws://127.0.0.1:9000/ws", **changes):
    return client_options(url, **{**DEFAULTS, **changes})


def test_defaults():
    opts = options(custom_params={"a": 1}, headers={"X-A": "b"}, ping_interval=1)
    assert isinstance(opts, ClientOptions)
    assert opts.url == "ws://127.0.0.1:9000/ws?a=1" and opts.target.host == "127.0.0.1"
    assert opts.ping_interval == 1.0 and isinstance(opts.ping_interval, float)
    assert opts.repeat_limit is None and opts.fast_reconnect_threshold == 3
    assert opts.no_reconnect_codes == frozenset({4001, 4010, 4011, 4012})
    assert ("X-A", "b") in opts.headers and opts.per_message_deflate is None


def test_zero_counts_are_allowed():
    opts = options(repeat_limit=0, fast_reconnect_threshold=0, offline_queue_size=0)
    assert opts.repeat_limit == 0 and opts.fast_reconnect_threshold == 0 and opts.offline_queue_size == 0
    assert options().offline_queue_size == 1000


@pytest.mark.parametrize("name", ["ping_interval", "pong_timeout", "fast_reconnect_interval",
                                  "reconnect_max_interval", "callback_timeout", "pending_timeout",
                                  "connect_timeout"])
@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, "1", True, None])
def test_times_must_be_positive_and_finite(name, value):
    with pytest.raises(ConfigError, match="^%s " % name):
        options(**{name: value})


@pytest.mark.parametrize("name", ["fast_reconnect_threshold", "repeat_limit", "offline_queue_size"])
@pytest.mark.parametrize("value", [-1, 1.5, "2", True])
def test_counts_must_be_non_negative_integers(name, value):
    with pytest.raises(ConfigError, match="^%s must be a non-negative integer" % name):
        options(**{name: value})


def test_other_checks():
    with pytest.raises(ConfigError, match="url is required"):
        options("")
    with pytest.raises(ConfigError, match="fast_reconnect_threshold"):
        options(fast_reconnect_threshold=None)
    for bad, message in [({"custom_params": [1]}, "custom_params"), ({"ping_msg": None}, "ping_msg"),
                         ({"ssl_context": object()}, "gevent-aware"), ({"no_reconnect_codes": ["x"]}, "close codes")]:
        with pytest.raises(ConfigError, match=message):
            options(**bad)


def test_ping_interval_is_checked_last():
    with pytest.raises(ConfigError, match="^pong_timeout"):
        options(ping_interval=0, pong_timeout=0)


def test_config_helpers_finite_and_allow_zero():
    assert positive_number("t", math.inf) == math.inf  # the adapter's rule is unchanged
    with pytest.raises(ConfigError, match="^t must be finite, got inf"):
        positive_number("t", math.inf, finite=True)
    assert positive_number("t", 0, allow_zero=True, finite=True) == 0.0
    assert positive_number("t", None, allow_none=True, finite=True) is None
    assert positive_int("n", 0, allow_zero=True) == 0
    assert positive_int("n", None, allow_none=True, allow_zero=True) is None
    with pytest.raises(ConfigError, match="^n must be a non-negative integer, got -1"):
        positive_int("n", -1, allow_zero=True)
    with pytest.raises(ConfigError, match="^n must be a positive integer, got 0"):
        positive_int("n", 0)


def test_reconnect_jitter():
    assert options().reconnect_jitter == "full"  # both clients randomise by default (issue 19)
    assert options(reconnect_jitter="original").reconnect_jitter == "original"
    for bad in ("none", "", None, True):
        with pytest.raises(ConfigError):
            options(reconnect_jitter=bad)
