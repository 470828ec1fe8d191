"""config.py's checkers for the cross-server bus (pure): channels, hooks, strategies, Redis config,
and the ``*_or_default`` forms of per-call arguments."""
import math

import pytest

from crossws_sync.bus import STRATEGIES
from crossws_sync.config import (
    SELECTION_STRATEGIES,
    BusOptions,
    channel_list,
    check_bus_options,
    check_callable,
    check_channel,
    check_redis_url,
    check_selection_strategy,
    positive_int_or_default,
    positive_number_or_default,
    redis_config_list,
    require_server_name,
)
from crossws_sync.errors import ConfigError, InvalidNameError


def options(**overrides):
    kwargs = dict(server_name="a", bridge_prefix="csbp:", ws_prefix="ws:", selection_strategy="random",
                  seconds={"redis_ping_interval": 5.0}, hooks={"ws_message_handler": None}, redis_config=[],
                  custom_channels=None, initial_channels=())
    kwargs.update(overrides)
    return check_bus_options(**kwargs)


def test_one_strategy_tuple():
    assert STRATEGIES is SELECTION_STRATEGIES
    assert check_selection_strategy("round-robin") == "round-robin"
    with pytest.raises(ConfigError, match="selection_strategy"):
        check_selection_strategy("fast")


@pytest.mark.parametrize("value, default, expected", [
    (2, 5.0, 2.0), (0.5, 5.0, 0.5), (0, 5.0, 5.0), (-1, 5.0, 5.0), (None, 5.0, 5.0), ("3", 5.0, 5.0),
    (True, 5.0, 5.0), (float("nan"), 5.0, 5.0)])
def test_positive_number_or_default(value, default, expected):
    result = positive_number_or_default(value, default)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize("value, expected", [(3, 3), (0, 1), (-2, 1), (2.0, 1), (True, 1), (None, 1), ("2", 1)])
def test_positive_int_or_default(value, expected):
    assert positive_int_or_default(value, 1) == expected


def test_check_channel():
    assert check_channel("ws:é") == "ws:é"
    for bad in ("", None, 1):
        with pytest.raises(TypeError):
            check_channel(bad)
        with pytest.raises(ConfigError):
            check_channel(bad, ConfigError)
    with pytest.raises(InvalidNameError):
        check_channel("ws:\udc00")


def test_channel_list():
    assert channel_list(None) == [] and channel_list("a") == ["a"] and channel_list(iter(["a", "b"])) == ["a", "b"]
    with pytest.raises(ConfigError):
        channel_list(["a", ""])


def test_check_callable():
    check_callable("hook", None)
    check_callable("hook", print)
    with pytest.raises(ConfigError, match="^hook must be callable"):
        check_callable("hook", "print")


def test_redis_config():
    assert redis_config_list("redis://h") == ["redis://h"] and redis_config_list({"host": "h"}) == [{"host": "h"}]
    assert redis_config_list(({"host": "h"},)) == [{"host": "h"}]
    with pytest.raises(ConfigError):
        redis_config_list(42)
    assert check_redis_url("rediss://h:1") == "rediss://h:1"
    with pytest.raises(ConfigError, match="must start with"):
        check_redis_url("http://h")


def test_server_name_is_required():
    assert require_server_name("n") == "n"
    for bad in ("", None, 3):
        with pytest.raises(ConfigError, match="^server_name must be specified"):
            require_server_name(bad)


def test_check_bus_options_normalizes_lists():
    assert options(redis_config={"host": "h"}, custom_channels="news", initial_channels=iter(["ws:b"])) == \
        BusOptions(redis_config=[{"host": "h"}], custom=["news"], initial=["ws:b"])


@pytest.mark.parametrize("overrides, match", [
    ({"server_name": ""}, "server_name"),
    ({"bridge_prefix": "ws:b"}, "different"),
    ({"ws_prefix": ""}, "non-empty"),
    ({"selection_strategy": "x"}, "selection_strategy"),
    ({"seconds": {"connect_timeout": 0}}, "^connect_timeout must be positive"),
    ({"seconds": {"connect_timeout": math.nan}}, "connect_timeout"),
    ({"hooks": {"on_server_name_conflict": 1}}, "on_server_name_conflict must be callable"),
    ({"redis_config": 1}, "redis_config"),
    ({"custom_channels": [""]}, "non-empty"),
])
def test_check_bus_options_rejects(overrides, match):
    with pytest.raises(ConfigError, match=match):
        options(**overrides)


def test_finite_numbers_and_non_negative_ints_for_other_callers():
    from crossws_sync.config import positive_int, positive_number

    assert positive_number("t", math.inf) == math.inf
    with pytest.raises(ConfigError, match="^t must be finite"):
        positive_number("t", math.inf, finite=True)
    assert positive_number("t", 2, finite=True) == 2.0
    assert positive_int("n", 0, allow_zero=True) == 0
    with pytest.raises(ConfigError, match="^n must be a non-negative integer"):
        positive_int("n", -1, allow_zero=True)
    with pytest.raises(ConfigError, match="^n must be a positive integer"):
        positive_int("n", 0)
